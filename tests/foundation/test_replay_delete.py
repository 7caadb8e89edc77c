"""docs/replay.md's command deletes a kept or failed run, never a running one.

It deleted the topics and the table state of a run whose workers were still in its
consumer group. Checked on the suite's real broker: a member in the run's group
stops the deletion; once it has left, the run is deleted as before.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dead_servers import DeadServer, outcome_within
from kafka import KafkaConsumer

from chainwatch import replay
from chainwatch.kafka_admin import KafkaUnreachable, admin_client
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings


def _until(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.1)  # poll interval of the condition


def _run(settings: Settings) -> tuple[Settings, Path]:
    """A run's settings and the table state its worker 0 wrote."""
    run = replay.replay_settings(settings, partitions=1, run_id=uuid.uuid4().hex[:10])
    state = run.data_path / "worker0" / "faust" / run.engine.app_id
    state.mkdir(parents=True)
    return run, state


def _topics(run: Settings) -> set[str]:
    admin = admin_client(run.kafka.bootstrap)
    try:
        return {t for t in admin.list_topics() if t.startswith(run.kafka.topic_prefix)}
    finally:
        admin.close()


def test_a_run_whose_group_has_a_member_is_refused_and_deleted_once_it_left(
    settings_factory: Callable[..., Settings],
) -> None:
    run, state = _run(settings_factory())
    prepare_topics(run)
    topics = _topics(run)
    worker = KafkaConsumer(
        f"{run.kafka.topic_prefix}scans",
        bootstrap_servers=run.kafka.bootstrap,
        group_id=run.engine.app_id,
        enable_auto_commit=False,
    )

    def joined() -> bool:
        worker.poll(100)
        return bool(worker.assignment())

    try:
        _until(joined, 60, "member in the run's group")
        with pytest.raises(replay.RunStillRunning) as refused:
            replay.delete_run(run)
        assert (_topics(run), state.exists()) == (topics, True)
    finally:
        worker.close()  # leaves the group, as a stopped worker does
    run_id = run.engine.app_id.removeprefix("replay-")
    assert str(refused.value).startswith(
        f"run {run_id} is still running: its consumer group {run.engine.app_id} has "
        "1 active member(s); nothing deleted"
    )

    replay.delete_run(run)

    assert not state.exists()
    _until(lambda: not _topics(run), 60, "deletion of the run's topics")


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_a_kafka_that_does_not_answer_whether_the_run_runs_deletes_nothing(
    tmp_path: Path, kind: str
) -> None:
    """Without an answer the run may be running: its state stays, and the error says
    which run and why, by the deadline (2 s for the connection and 2 s for the call)."""
    server = DeadServer(kind)
    try:
        bootstrap = f"127.0.0.1:{server.port}"
        run, state = _run(Settings(data_dir=tmp_path, kafka={"bootstrap_servers": bootstrap}))  # type: ignore[arg-type]
        outcome = outcome_within(30, lambda: replay.delete_run(run, timeout_s=2))
    finally:
        server.close()
    assert isinstance(outcome, KafkaUnreachable), outcome
    run_id = run.engine.app_id.removeprefix("replay-")
    assert str(outcome).startswith(
        f"run {run_id} not deleted: whether it still runs is unknown, "
        f"cannot reach Kafka at {bootstrap}"
    ), outcome
    assert state.exists()
