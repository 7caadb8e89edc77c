"""The loop maps while ClickHouse inserts; sealed batches never change and are stored in order."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from aiokafka import TopicPartition
from samples import scan_json
from sink_samples import record

from sinks.clickhouse.rows import ScanRows
from sinks.clickhouse.sink import ClickHouseSink, SinkConfig

TP = TopicPartition("s", 0)


class _Store:
    """Inserts wait for `release` (a busy ClickHouse) and fail while `down` is set."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.refused: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.down = threading.Event()

    def insert(self, table: str, rows: Any, **kwargs: Any) -> None:
        token = kwargs["settings"]["insert_deduplication_token"]
        self.entered.set()
        assert self.release.wait(30)
        if self.down.is_set():
            self.refused.append(token)
            raise ConnectionError("ClickHouse is down")
        self.tokens.append(token)

    def query(self, sql: str, **kwargs: Any) -> Any:
        raise AssertionError("not used")


class _Consumer:
    """What the sink's flush and pause touch of an AIOKafkaConsumer."""

    def __init__(self) -> None:
        self.commits: list[int] = []
        self._paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets[TP])


def _sink(store: _Store, consumer: _Consumer, **config: Any) -> ClickHouseSink:
    sink = ClickHouseSink(
        bootstrap="unused:1",
        group_id="g",
        client=store,
        mappers={"s": ScanRows()},
        config=SinkConfig(
            **{"flush_rows": 10, "initial_backoff_s": 0.01, "max_backoff_s": 0.01, **config}
        ),
    )
    sink._consumer = consumer  # type: ignore[assignment]
    sink._loaded.add(TP)  # nothing stored yet: no skip-set to read
    return sink


def _records(first: int, last: int) -> list[Any]:
    return [record(scan_json(i), topic="s", offset=i) for i in range(first, last + 1)]


async def _flushed(sink: ClickHouseSink) -> None:
    """The background flush has ended (its result is left for `after_batch` to read)."""
    task = sink._flush_task
    assert task is not None, "no flush under way"
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done, "the flush did not end within 10 s"


def test_records_mapped_during_an_insert_go_to_the_next_batch() -> None:
    store, consumer = _Store(), _Consumer()
    sink = _sink(store, consumer)

    async def scenario() -> None:
        store.release.clear()
        await sink.handle(TP, _records(0, 9))
        await sink.after_batch(consumer)  # due (10 rows): the flush starts in the background
        await asyncio.to_thread(store.entered.wait, 10)
        await sink.handle(TP, _records(10, 19))  # the loop goes on while ClickHouse inserts
        await sink.after_batch(consumer)
        assert store.tokens == []
        assert sink.buffered_rows == 20
        store.release.set()
        await _flushed(sink)
        assert store.tokens == ["scans:s:0:0-9"]
        assert consumer.commits == [10]
        await sink.after_batch(consumer)  # reads the result, starts the next flush
        await _flushed(sink)

    asyncio.run(scenario())
    assert store.tokens == ["scans:s:0:0-9", "scans:s:0:10-19"]
    assert consumer.commits == [10, 20]
    assert sink.stats.rows_written == 20


def test_a_failed_batch_is_retried_unchanged_before_later_ones() -> None:
    store, consumer = _Store(), _Consumer()
    # a backoff longer than any stall of this process: with 10 ms, a machine under load
    # descheduled the test between the failure and the next check, the retry started at
    # once while ClickHouse was still down, and the test's own retry found none to wait on
    sink = _sink(store, consumer, initial_backoff_s=1.0, max_backoff_s=1.0)

    async def scenario() -> None:
        store.down.set()
        await sink.handle(TP, _records(0, 9))
        await sink.after_batch(consumer)  # the flush starts and fails in the background
        await asyncio.to_thread(store.entered.wait, 10)
        await sink.handle(TP, _records(10, 14))  # fetched before the failure was seen
        await _flushed(sink)
        await sink.after_batch(consumer)
        assert consumer.paused() == {TP}  # nothing more is fetched while ClickHouse is down
        assert store.refused == ["scans:s:0:0-9"]
        assert sink.buffered_rows == 15
        store.down.clear()
        deadline = time.monotonic() + 10
        while sink._flush_task is None:  # the retry starts once the backoff has passed
            assert time.monotonic() < deadline, "no retry within 10 s"
            await asyncio.sleep(0.05)  # poll interval of the condition
            await sink.after_batch(consumer)
        await _flushed(sink)
        await sink.after_batch(consumer)
        assert consumer.paused() == set()

    asyncio.run(scenario())
    assert store.tokens == ["scans:s:0:0-9", "scans:s:0:10-14"]  # same batch, then the new one
    assert consumer.commits == [15]
    assert sink.stats.rows_written == 15
    assert sink.buffered_rows == 0


def test_the_loop_waits_for_the_flush_when_the_buffer_is_full() -> None:
    store, consumer = _Store(), _Consumer()
    sink = _sink(store, consumer, max_buffer_rows=15)

    async def scenario() -> None:
        store.release.clear()
        await sink.handle(TP, _records(0, 9))
        await sink.after_batch(consumer)
        await asyncio.to_thread(store.entered.wait, 10)
        await sink.handle(TP, _records(10, 19))  # 20 rows >= 15: the next turn must wait
        waiting = asyncio.create_task(sink.after_batch(consumer))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        store.release.set()
        await waiting
        assert sink.stats.rows_written == 10

    asyncio.run(scenario())


def test_the_loop_waits_for_the_flush_when_the_buffer_holds_max_buffer_bytes() -> None:
    """Rows alone bounded the buffer: records of up to a MiB (a dead letter keeps the
    rejected bytes) filled `max_buffer_rows` (500,000) rows of memory while an insert
    lasted, up to its 120 s deadline on a server that stopped answering."""
    store, consumer = _Store(), _Consumer()
    weight = sum(len(r.value) + len(r.key or b"") for r in _records(0, 9))
    sink = _sink(store, consumer, max_buffer_rows=1_000, max_buffer_bytes=weight + weight // 2)

    async def scenario() -> None:
        store.release.clear()
        await sink.handle(TP, _records(0, 9))
        await sink.after_batch(consumer)  # due (10 rows): the flush starts in the background
        await asyncio.to_thread(store.entered.wait, 10)
        await sink.handle(TP, _records(10, 19))  # 20 rows, far below max_buffer_rows
        assert sink.buffered_bytes >= sink.config.max_buffer_bytes
        waiting = asyncio.create_task(sink.after_batch(consumer))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # no more is fetched until the insert is in
        store.release.set()
        await waiting
        assert sink.stats.rows_written == 10
        await _flushed(sink)  # the next flush started at once (the buffer is full)

    asyncio.run(scenario())
    assert sink.buffered_bytes == 0
