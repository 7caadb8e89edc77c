"""Flushes never overlap: a revocation during the loop's flush does not insert twice."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError
from samples import scan_json
from sink_samples import record

from sinks.clickhouse.rows import ScanRows
from sinks.clickhouse.sink import ClickHouseSink, rows_at_fault


class _SlowStore:
    """Inserts block until released, like a busy ClickHouse."""

    def __init__(self) -> None:
        self.inserted: list[tuple[str, int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def insert(self, table: str, rows: Any, **kwargs: Any) -> None:
        self.entered.set()
        assert self.release.wait(30)
        self.inserted.append((table, len(rows)))

    def query(self, sql: str, **kwargs: Any) -> Any:
        raise AssertionError("not used")


def test_a_revocation_during_a_flush_waits_for_it_and_inserts_nothing_twice() -> None:
    store = _SlowStore()
    sink = ClickHouseSink(
        bootstrap="unused:1", group_id="g", client=store, mappers={"s": ScanRows()}
    )
    tp = TopicPartition("s", 0)
    sink.add_many(tp, [record(scan_json(i), topic="s", offset=i) for i in range(10)])

    async def scenario() -> None:
        loop_flush = asyncio.create_task(sink.flush())
        await asyncio.to_thread(store.entered.wait, 30)
        revocation = asyncio.create_task(sink.release([tp]))
        await asyncio.sleep(0)  # the revocation is waiting now
        store.release.set()
        assert await loop_flush
        await revocation

    asyncio.run(scenario())
    assert store.inserted == [("scans", 10)]
    assert sink.stats.rows_written == 10


def test_one_batch_of_scans_over_101_months_is_stored(tmp_path: Path) -> None:
    """Valid backfilled scans a month apart: ClickHouse refuses a block over more than
    100 partitions by default, and the sink retried that batch for ever."""
    from chainwatch.settings import Settings
    from sinks.clickhouse.connection import SerializedClient, open_client
    from sinks.clickhouse.migrate import migrate

    settings = Settings(data_dir=tmp_path)
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        sink = ClickHouseSink(
            bootstrap="unused:1", group_id="g", client=client, mappers={"s": ScanRows()}
        )
        times = [datetime(1980 + i // 12, i % 12 + 1, 1, tzinfo=UTC) for i in range(101)]
        scans = [scan_json(i, event_time=t.isoformat()) for i, t in enumerate(times)]
        sink.add_many(
            TopicPartition("s", 0), [record(s, topic="s", offset=i) for i, s in enumerate(scans)]
        )
        assert asyncio.run(sink.flush())
        stored = client.query("SELECT count(), uniqExact(toYYYYMM(event_time)) FROM scans")
        assert stored.result_rows == [(101, 101)]
    finally:
        client.close()


class _RowsWithOneBadValue:
    """A mapper whose rows ClickHouse cannot take for one record: a lone surrogate in a
    String column, which only the client's serialiser notices (as with the CRM key
    `"\\ud800"` before tombstone keys were checked)."""

    tables = (ScanRows.table,)

    def rows(self, rec: Any) -> dict[str, list[Any]]:
        (row,) = ScanRows().rows(rec)["scans"]
        if rec.offset == 37:
            row = ("\ud800", *row[1:])
        return {"scans": [row]}


def test_a_row_clickhouse_cannot_take_is_skipped_and_the_rest_stored(tmp_path: Path) -> None:
    from chainwatch.settings import Settings
    from sinks.clickhouse.connection import SerializedClient, open_client
    from sinks.clickhouse.migrate import migrate

    settings = Settings(data_dir=tmp_path)
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        sink = ClickHouseSink(
            bootstrap="unused:1", group_id="g", client=client,
            mappers={"s": _RowsWithOneBadValue()},  # type: ignore[dict-item]
        )  # fmt: skip
        sink.add_many(
            TopicPartition("s", 0), [record(scan_json(i), topic="s", offset=i) for i in range(100)]
        )
        assert asyncio.run(sink.flush())
        assert (sink.stats.invalid_records, sink.stats.rows_written) == (1, 99)
        stored = client.query("SELECT count(), countIf(kafka_offset = 37) FROM scans")
        assert stored.result_rows == [(99, 0)]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("exc", "rows"),
    [
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True),
        (DataError("Unable to create native array for column `n`"), True),
        (DatabaseError("Code: 252. DB::Exception: Too many partitions for single INSERT"), True),
        (DatabaseError("Code: 241. DB::Exception: Memory limit (total) exceeded"), False),
        (OperationalError("Error HTTPConnectionPool: connection refused"), False),
        (ConnectionRefusedError(111, "Connection refused"), False),
        (TimeoutError("timed out"), False),
    ],
)
def test_only_rows_at_fault_split_a_batch(exc: BaseException, rows: bool) -> None:
    assert rows_at_fault(exc) is rows
