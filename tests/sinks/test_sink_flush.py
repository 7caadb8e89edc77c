"""Flushes never overlap: a revocation during the loop's flush does not insert twice."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiokafka import TopicPartition
from samples import scan_json
from sink_samples import record

from sinks.clickhouse.rows import ScanRows
from sinks.clickhouse.sink import ClickHouseSink


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
