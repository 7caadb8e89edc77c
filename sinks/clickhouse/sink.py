"""Kafka → ClickHouse, with no loss and no duplicates as seen by queries.

Lifecycle and guarantees:
- Records are buffered per (topic, partition) and flushed when a buffer holds
  `flush_rows` rows or its oldest row is `flush_interval_s` old.
- A flush inserts each partition's rows as one batch with the insert
  de-duplication token `table:topic:partition:first-last`, and only after the
  insert succeeded are the Kafka offsets committed (at-least-once delivery).
- Every row carries its source offset; on partition assignment the sink asks
  ClickHouse for the highest stored offset and skips what is already there, so
  a crash between insert and commit never duplicates rows.
- When an insert fails the sink stops fetching (backpressure: the buffer stays
  bounded), retries with exponential backoff, and resumes when ClickHouse is back.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from chainwatch.logs import get_logger

log = get_logger(__name__)


class TableWriter(Protocol):
    """Turns one Kafka record into rows of one table (pure, no I/O)."""

    table: str
    columns: Sequence[str]

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> list[Sequence[Any]]: ...


class Inserter(Protocol):
    def insert(self, table: str, rows: Any, **kwargs: Any) -> Any: ...
    def query(self, sql: str, **kwargs: Any) -> Any: ...


@dataclass
class _Buffer:
    rows: list[Sequence[Any]] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1
    since: float = 0.0


@dataclass
class SinkStats:
    rows_written: int = 0
    batches: int = 0
    retries: int = 0
    skipped_already_stored: int = 0


class _Resume(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.sink.flush()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.sink.load_stored_offsets(list(assigned))


class ClickHouseSink:
    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        client: Inserter,
        writers: Mapping[str, TableWriter],
        flush_rows: int = 50_000,
        flush_interval_s: float = 1.0,
        max_backoff_s: float = 30.0,
        on_flush: Callable[[SinkStats], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.client = client
        self.writers = dict(writers)
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self.on_flush = on_flush
        self.stats = SinkStats()
        self._buffers: dict[TopicPartition, _Buffer] = {}
        self._stored: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None

    async def load_stored_offsets(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            writer = self.writers[tp.topic]
            sql = (
                f"SELECT max(kafka_offset), count() FROM {writer.table} "
                f"WHERE kafka_topic = '{tp.topic}' AND kafka_partition = {tp.partition}"
            )
            result = await self._with_retry(functools.partial(self.client.query, sql))
            top, count = result.result_rows[0]
            self._stored[tp] = int(top) if count else -1

    async def _with_retry(self, call: Callable[[], Any]) -> Any:
        delay = 0.2
        while True:
            try:
                return await asyncio.to_thread(call)
            except Exception as exc:  # ClickHouse down: back off, keep the buffer
                self.stats.retries += 1
                log.warning("clickhouse_unavailable", error=str(exc)[:200], retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    def _add(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.offset <= self._stored.get(tp, -1):
            self.stats.skipped_already_stored += 1
            return
        buf = self._buffers.get(tp)
        if buf is None:
            buf = self._buffers[tp] = _Buffer(since=time.monotonic(), first_offset=record.offset)
        buf.rows.extend(self.writers[tp.topic].rows(record))
        buf.last_offset = record.offset

    def _due(self) -> bool:
        now = time.monotonic()
        return any(
            buf.last_offset >= 0
            and (len(buf.rows) >= self.flush_rows or now - buf.since >= self.flush_interval_s)
            for buf in self._buffers.values()
        )

    async def flush(self) -> None:
        """Insert every buffer, then commit the offsets that are now stored."""
        if not self._buffers:
            return
        commits: dict[TopicPartition, int] = {}
        for tp, buf in list(self._buffers.items()):
            writer = self.writers[tp.topic]
            if buf.rows:
                token = (
                    f"{writer.table}:{tp.topic}:{tp.partition}:{buf.first_offset}-{buf.last_offset}"
                )
                rows = buf.rows
                insert = functools.partial(
                    self.client.insert,
                    writer.table,
                    rows,
                    column_names=list(writer.columns),
                    settings={"insert_deduplication_token": token},
                )
                await self._with_retry(insert)
                self.stats.rows_written += len(rows)
                self.stats.batches += 1
            self._stored[tp] = buf.last_offset
            commits[tp] = buf.last_offset + 1
        self._buffers.clear()
        if commits and self._consumer is not None:
            await self._consumer.commit(commits)
        if self.on_flush is not None:
            self.on_flush(self.stats)

    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> SinkStats:
        """Consume until `stop` is set (or, with `drain`, until caught up with every topic)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
        )
        self._consumer = consumer
        consumer.subscribe(list(self.writers), listener=_Resume(self))
        await consumer.start()
        try:
            targets: dict[TopicPartition, int] | None = None
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self.flush_rows)
                for tp, records in batch.items():
                    for record in records:
                        self._add(tp, record)
                if self._due():
                    await self.flush()
                if drain:
                    assigned = consumer.assignment()
                    if not assigned:
                        continue
                    if targets is None or set(targets) != assigned:
                        targets = await consumer.end_offsets(list(assigned))
                    if await self._caught_up(consumer, targets):
                        break
            await self.flush()
        finally:
            self._consumer = None
            await consumer.stop()
        return self.stats

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
        for tp, end in targets.items():
            if int(await consumer.position(tp)) < end:
                return False
        return True
