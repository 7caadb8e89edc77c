"""Workers create the tables' changelog topics up front, as faust would configure them."""

from __future__ import annotations

from pathlib import Path

from chainwatch.runners import changelog_topics
from chainwatch.settings import Settings
from schemas.plan import load_plan
from streams.app import create_app
from streams.topics import TopicNames


def test_every_table_changelog_is_listed_compacted_with_min_insync(tmp_path: Path) -> None:
    from streams.engine.agents import EngineConfig, register_engine

    settings = Settings(  # type: ignore[call-arg]
        kafka={"replication_factor": 3, "min_insync_replicas": 2}, engine={"app_id": "cw"}
    )
    app = create_app("cw", bootstrap="127.0.0.1:1", partitions=8, data_dir=tmp_path)
    register_engine(app, EngineConfig(names=TopicNames(""), plan=load_plan(None)))
    grouped = changelog_topics(app, settings)
    names = [name for group in grouped.values() for name in group]
    assert sorted(names) == sorted(t.changelog_topic.get_topic_name() for t in app.tables.values())
    assert names
    assert all(name.startswith("cw-") and name.endswith("-changelog") for name in names)
    for config in grouped:
        assert dict(config)["cleanup.policy"] == "compact"
        assert dict(config)["min.insync.replicas"] == "2"
