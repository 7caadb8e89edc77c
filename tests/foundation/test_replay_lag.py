"""The replay's lag probe (`chainwatch.replay._lag`), against the suite's broker.

It runs every `IDLE_POLL_S` while a replay drains each event-time window, so it
asks only about the group's own topics (listing every topic of a busy broker
cost ~80 ms of CPU per probe, taken from the workers beside it).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError
from samples import scan

from chainwatch import kafka_admin, replay
from chainwatch.kafka_admin import KafkaDeadlineExceeded, create_missing_topics
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
    create_missing_topics(settings.kafka.bootstrap, inboxes, request_timeout_s=15, partitions=4)
    lines = [scan(event_id=f"e-{n}") for n in range(3)]
    scenario = tmp_path / "three.ndjson"
    scenario.write_text(
        "".join(
            json.dumps({"topic": "scans", "key": s["order_id"], "value": s}) + "\n" for s in lines
        )
    )
    asyncio.run(publish_scenario(settings, scenario, no_progress))
    assert replay._lag(settings) == 3  # the engine's group has committed none of them


class _FakeAdmin:
    """An admin client whose group has committed nothing and whose topics all exist;
    `ends` gives the topics' end offsets (all 0 here)."""

    def list_group_offsets(self, groups: dict[str, None]) -> dict[str, dict[Any, Any]]:
        return {group: {} for group in groups}

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [{"topic": t, "error_code": 0} for t in topics]

    def list_partition_offsets(self, specs: dict[Any, Any], timeout_ms: int) -> dict[Any, Any]:
        ends = self.ends(len(specs))
        return {tp: SimpleNamespace(offset=end) for tp, end in zip(specs, ends, strict=True)}

    def ends(self, count: int) -> list[int]:
        return [0] * count

    def close(self) -> None:
        pass


def test_the_probe_reads_the_committed_offsets_before_the_ends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`wait_until_idle` ends at the first zero only because of this order: ends read
    after the offsets mean nothing was written between (see its docstring)."""
    settings = Settings(data_dir=tmp_path)
    asked: list[str] = []

    class Admin(_FakeAdmin):
        def list_group_offsets(self, groups: dict[str, None]) -> dict[str, dict[Any, Any]]:
            asked.append("committed")
            return super().list_group_offsets(groups)

        def list_partition_offsets(self, specs: dict[Any, Any], timeout_ms: int) -> dict[Any, Any]:
            asked.append("ends")
            return super().list_partition_offsets(specs, timeout_ms)

    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: Admin())
    assert replay._lag(settings) == 0
    assert asked == ["committed", "ends"]


def test_a_wait_probes_over_one_connection_and_opens_another_only_after_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A replay waits on every event-time window, ten probes a second: a connection
    per probe cost it ~3x the CPU of the probe itself (`LagProbe`)."""
    settings = Settings(data_dir=tmp_path)
    behind = iter([5, 4, None, 2, 0])  # None: that probe fails
    opened: list[int] = []
    closed: list[int] = []
    all_closed = threading.Event()

    class Admin(_FakeAdmin):
        def __init__(self) -> None:
            self.number = len(opened)
            opened.append(self.number)

        def ends(self, count: int) -> list[int]:
            lag = next(behind)
            if lag is None:
                raise KafkaConnectionError("the broker went away")
            return [lag] + [0] * (count - 1)

        def close(self) -> None:
            closed.append(self.number)
            if len(closed) == 2:
                all_closed.set()

    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: Admin())
    monkeypatch.setattr(replay.time, "sleep", lambda _s: None)
    messages: list[str] = []
    replay.wait_until_idle(settings, [], lambda m, **_c: messages.append(m), timeout_s=30)

    assert opened == [0, 1]  # five probes: one connection, and one more after the failure
    assert all_closed.wait(5), closed  # the failed one from a thread, the other at the end
    assert sorted(closed) == [0, 1]
    assert any("Kafka probe failed" in m and "the broker went away" in m for m in messages)


def test_a_probe_that_connects_after_its_deadline_closes_its_connection_and_keeps_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its thread outlives the deadline (`bounded`): the connection it opens late
    would otherwise be shared with the next probe's thread."""
    settings = Settings(data_dir=tmp_path)
    release = threading.Event()
    opened: list[Any] = []
    closed = threading.Event()

    class Admin(_FakeAdmin):
        def __init__(self) -> None:
            self.closed = False
            opened.append(self)
            if len(opened) == 1:
                release.wait(10)  # the first connection comes after the probe's deadline

        def close(self) -> None:
            self.closed = True
            closed.set()

    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: Admin())
    monkeypatch.setattr(replay, "probe_timeout_s", lambda _settings: 0.2)
    with replay.LagProbe(settings) as probe:
        with pytest.raises(KafkaDeadlineExceeded):
            probe.lag()
        release.set()
        assert closed.wait(5)  # the late connection, closed by its own probe's thread
        assert opened[0].closed
        assert probe.lag() == 0  # the next probe opens its own connection
        assert len(opened) == 2
        assert not opened[1].closed
    assert opened[1].closed  # and the wait's end closes it
