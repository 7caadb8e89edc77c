"""The replay's lag probe (`chainwatch.replay._lag`), against the suite's broker.

It runs every `IDLE_POLL_S` while a replay drains each event-time window, so it
asks only about the group's own topics (listing every topic of a busy broker
cost ~80 ms of CPU per probe, taken from the workers beside it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from samples import scan

from chainwatch import replay
from chainwatch.kafka_admin import create_missing_topics
from chainwatch.replay import no_progress, publish_scenario
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings
from streams.engine.messages import INTERNAL_TOPICS


def test_the_lag_is_unknown_until_the_topics_exist_then_counts_what_is_not_committed(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    assert replay._lag(settings) is None  # the run's topics are not there yet

    prepare_topics(settings)
    assert replay._lag(settings) is None  # nor are the engine's inbox topics
    inboxes: dict[str, dict[str, str]] = {
        f"{settings.engine.app_id}-{topic}": {} for topic in INTERNAL_TOPICS
    }
    create_missing_topics(settings.kafka.bootstrap, inboxes, partitions=4)
    lines = [scan(event_id=f"e-{n}") for n in range(3)]
    scenario = tmp_path / "three.ndjson"
    scenario.write_text(
        "".join(
            json.dumps({"topic": "scans", "key": s["order_id"], "value": s}) + "\n" for s in lines
        )
    )
    asyncio.run(publish_scenario(settings, scenario, no_progress))
    assert replay._lag(settings) == 3  # the engine's group has committed none of them


def test_the_probe_reads_the_committed_offsets_before_the_ends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`wait_until_idle` ends at the first zero only because of this order: ends read
    after the offsets mean nothing was written between (see its docstring)."""
    settings = Settings(data_dir=tmp_path)
    asked: list[str] = []

    class Admin:
        def list_group_offsets(self, groups: dict[str, None]) -> dict[str, dict[Any, Any]]:
            asked.append("committed")
            return {group: {} for group in groups}

        def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
            return [{"topic": t, "error_code": 0} for t in topics]

        def list_partition_offsets(self, specs: dict[Any, Any], timeout_ms: int) -> dict[Any, Any]:
            asked.append("ends")
            return {tp: SimpleNamespace(offset=0) for tp in specs}

        def close(self) -> None:
            pass

    monkeypatch.setattr(replay, "admin_client", lambda _bootstrap: Admin())
    assert replay._lag(settings) == 0
    assert asked == ["committed", "ends"]
