"""No loss, no duplicates: kill -9 mid-stream, and a crash between insert and commit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka_groups import expel_members
from samples import customer_json, scan_json
from sink_harness import SinkProcess, loopback_count, prepare_all_topics, publish, wait_for
from sink_samples import make_alert, make_state

from chainwatch.settings import Settings, SinkSettings
from chainwatch.sink_runner import build_mappers
from schemas.alerts import AlertStatus
from sinks.clickhouse import sink as sink_module
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.sink import ClickHouseSink, SinkConfig
from streams.topics import ALERTS, CUSTOMERS, ORDER_STATE, SCANS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Expected:
    scans: int
    alerts: dict[str, str]
    order_versions: dict[str, int]
    visits: int
    customers: set[str]


def publish_dataset(settings: Settings, n_scans: int) -> Expected:
    """Every kind of record the sink stores, with re-published ids and invalid records."""
    publish(settings, SCANS, ((f"PO-{i % 50}".encode(), scan_json(i)) for i in range(n_scans)))
    publish(settings, SCANS, ((b"PO-x", b"{not json") for _ in range(25)))
    alerts: dict[str, str] = {}
    records: list[tuple[bytes | None, bytes | None]] = []
    for n in range(200):
        alert = make_alert(n)
        records.append((alert.alert_id.encode(), alert.model_dump_json().encode()))
        alerts[alert.alert_id] = "open"
    for n in range(0, 200, 2):
        alert = make_alert(n, AlertStatus.RESOLVED)
        records.append((alert.alert_id.encode(), alert.model_dump_json().encode()))
        alerts[alert.alert_id] = "resolved"
    publish(settings, ALERTS, records)
    states = [
        (f"PO-{n}".encode(), make_state(n, version, ended=version == 3).model_dump_json().encode())
        for version in (1, 2, 3)
        for n in range(100)
    ]
    publish(settings, ORDER_STATE, states)
    customers: list[tuple[bytes | None, bytes | None]] = [
        (f"C-{n}".encode(), customer_json(f"C-{n}", f"Customer {n}")) for n in range(20)
    ]
    customers += [(f"C-{n}".encode(), None) for n in range(5)]  # tombstones
    publish(settings, CUSTOMERS, customers)
    return Expected(
        scans=n_scans,
        alerts=alerts,
        order_versions={f"PO-{n}": 3 for n in range(100)},
        visits=200,
        customers={f"C-{n}" for n in range(5, 20)},
    )


def check_store(settings: Settings, expected: Expected) -> None:
    client = open_client(settings)
    try:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in client.query(sql).result_rows]

        assert rows("SELECT count(), uniqExact(event_id) FROM scans") == [
            (expected.scans, expected.scans)
        ]
        # raw rows are exact: one per (partition, offset)
        assert rows(
            "SELECT count() FROM (SELECT kafka_partition, kafka_offset FROM scans "
            "GROUP BY kafka_partition, kafka_offset HAVING count() > 1)"
        ) == [(0,)]
        assert dict(rows("SELECT alert_id, status FROM alerts_current")) == expected.alerts
        assert dict(rows("SELECT order_id, version FROM order_state_current")) == (
            expected.order_versions
        )
        assert dict(rows("SELECT order_id, version FROM orders_current")) == (
            expected.order_versions
        )
        assert rows("SELECT count() FROM stage_visits_current") == [(expected.visits,)]
        assert {r[0] for r in rows("SELECT customer_id FROM customers_current")} == (
            expected.customers
        )
        assert rows("SELECT sum(events) FROM scans_hourly") == [(expected.scans,)]
        # every order has one ended, on-time yarn visit and one ended, late dyeing visit
        assert rows(
            "SELECT stage, sum(completed_visits), sum(on_time_visits) FROM stage_sla_hourly_view "
            "GROUP BY stage ORDER BY stage"
        ) == [("dyeing", 100, 0), ("yarn_sourcing", 100, 100)]
    finally:
        client.close()


def test_kill_9_mid_stream_then_restart_stores_every_record_once(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(sink={"flush_rows": 300, "flush_interval_s": 0.2})
    prepare_all_topics(settings)
    expected = publish_dataset(settings, n_scans=8_000)

    first = SinkProcess(settings, tmp_path / "sink1.log")
    stored = wait_for(
        lambda: (loopback_count(settings, "SELECT count() FROM scans") or 0) >= 1000,
        timeout_s=120,
        what="the first sink to store some scans",
        interval_s=0.01,
    )
    first.kill()  # SIGKILL: no flush, no commit, no lock release
    assert stored, first.log()
    at_kill = loopback_count(settings, "SELECT 1")  # the endpoint is gone with the process
    assert at_kill is None
    # the group drops the killed sink at once, not at the end of its 10 s session
    assert expel_members(settings.kafka.bootstrap, f"{settings.engine.app_id}-clickhouse-sink")

    # restart with the default batch size: other batch boundaries, other tokens
    restarted = settings.model_copy(update={"sink": SinkSettings()})
    second = SinkProcess(restarted, tmp_path / "sink2.log", "--drain")
    assert second.wait(timeout_s=180) == 0, second.log()[-3000:]
    check_store(settings, expected)


class _CrashBeforeCommit(ClickHouseSink):
    """Inserts but never commits: what a crash right after every insert leaves behind."""

    async def _commit(self, commits: object) -> None:
        return None


def _run(sink: ClickHouseSink) -> None:
    asyncio.run(sink.run(asyncio.Event(), drain=True))


def test_rows_inserted_but_not_committed_are_not_stored_twice(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)
    expected = publish_dataset(settings, n_scans=5_000)
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        group = f"{settings.engine.app_id}-crash"
        crashed = _CrashBeforeCommit(
            bootstrap=settings.kafka.bootstrap,
            group_id=group,
            client=client,
            mappers=build_mappers(settings),
            config=SinkConfig(flush_rows=700, flush_interval_s=0.1),
        )
        _run(crashed)
        assert crashed.stats.rows_written > 0
        # Same group, no committed offsets, different batch boundaries (so different
        # de-duplication tokens): only the stored-offset check prevents duplicates.
        again = ClickHouseSink(
            bootstrap=settings.kafka.bootstrap,
            group_id=group,
            client=client,
            mappers=build_mappers(settings),
            config=SinkConfig(flush_rows=333, flush_interval_s=0.1),
        )
        _run(again)
        # Raw rows are all skipped. Replaced versions that ClickHouse already merged
        # away may be inserted again: older versions, invisible through FINAL.
        assert again.stats.skipped_already_stored >= expected.scans
        assert again.stats.invalid_records == crashed.stats.invalid_records == 25
    finally:
        client.close()
    check_store(settings, expected)


def test_invalid_records_are_counted_not_fatal(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)
    publish(
        settings, SCANS, [(b"k", b"[1,2]"), (b"k", json.dumps({"x": 1}).encode()), (b"k", None)]
    )
    publish(settings, ALERTS, [(b"a", b"{}")])
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        sink = ClickHouseSink(
            bootstrap=settings.kafka.bootstrap,
            group_id=f"{settings.engine.app_id}-invalid",
            client=client,
            mappers=build_mappers(settings),
        )
        _run(sink)
        assert (sink.stats.invalid_records, sink.stats.rows_written) == (4, 0)
    finally:
        client.close()


def test_a_record_no_mapper_can_store_is_skipped_and_logged_never_fatal(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """Integers beyond 64 bits in scan `attributes` and a CRM pass-through field (issue 10, H2)."""
    settings = settings_factory()
    prepare_all_topics(settings)
    huge = 2**70
    publish(
        settings,
        SCANS,
        [
            (b"PO-1", scan_json(1, attributes={"gauge": huge})),
            (b"PO-2", scan_json(2)),
        ],
    )
    publish(
        settings,
        CUSTOMERS,
        [
            (b"C-1", customer_json("C-1", "Big Numbers Ltd", credit_limit=huge)),
            (b"C-2", customer_json("C-2", "Nordic Knits AB")),
        ],
    )
    sink = SinkProcess(settings, tmp_path / "sink.log", "--drain")
    assert sink.wait(timeout_s=180) == 0, sink.log()[-3000:]
    log = sink.log()
    for topic in (SCANS, CUSTOMERS):
        assert "invalid_record_skipped" in log
        assert settings.kafka.topic(topic) in log
    assert "offset" in log
    client = open_client(settings)
    try:
        events = client.query("SELECT event_id FROM scans").result_rows
        customers = client.query("SELECT customer_id FROM customers_current").result_rows
    finally:
        client.close()
    assert [r[0] for r in events] == ["ev-2"]
    assert [r[0] for r in customers] == ["C-2"]


def test_a_commit_that_failed_is_committed_later_with_no_new_record(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault bench's kill9 (2026-12-07): a commit failed while the broker was gone and
    that partition got no record after it, so its offset stayed behind its stored rows for
    good (lag never 0). The failed commit is tried again without waiting for a record."""
    settings = settings_factory()
    prepare_all_topics(settings)
    publish(settings, SCANS, [(b"PO-0", scan_json(i)) for i in range(0, 250, 50)])  # PO-0's
    commits: list[dict[Any, int]] = []
    real_commit = sink_module.commit_within

    async def refusing_the_first(consumer: Any, offsets: dict[Any, int]) -> None:
        commits.append(dict(offsets))
        if len(commits) == 1:
            raise TimeoutError("the broker went away")
        await real_commit(consumer, offsets)

    monkeypatch.setattr(sink_module, "commit_within", refusing_the_first)
    client = SerializedClient(open_client(settings))
    group = f"{settings.engine.app_id}-commit-again"
    try:
        migrate(client, settings)
        sink = ClickHouseSink(
            bootstrap=settings.kafka.bootstrap,
            group_id=group,
            client=client,
            mappers=build_mappers(settings),
            config=SinkConfig(flush_rows=100, flush_interval_s=0.2),
        )

        async def scenario() -> None:
            stop = asyncio.Event()
            running = asyncio.create_task(sink.run(stop))
            try:
                async with asyncio.timeout(60):
                    while len(commits) < 2:
                        assert not running.done(), running
                        await asyncio.sleep(0.05)
            finally:
                stop.set()
                await running

        asyncio.run(scenario())
    finally:
        client.close()
    assert sink.stats.rows_written == 5
    assert commits[1] == commits[0]  # the same offsets, with no record after them
    [(tp, end)] = commits[0].items()
    assert end == 5
    reader = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=group)
    try:
        assert reader.committed(KafkaTopicPartition(tp.topic, tp.partition)) == 5
    finally:
        reader.close()
