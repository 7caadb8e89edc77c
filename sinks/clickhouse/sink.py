"""Kafka → ClickHouse, with no loss and no duplicates as seen by queries.

Lifecycle and guarantees:
- Records are mapped to rows as they arrive (`RecordMapper`, pure) and buffered
  per (topic, partition). Buffers are flushed when one holds `flush_rows` rows,
  when the oldest row is `flush_interval_s` old, or when all buffers together
  reach `max_buffer_rows` rows or `max_buffer_bytes` bytes of the records they
  were mapped from.
- A flush seals the open buffers (they never change again) and inserts, per
  partition and table, one batch with the insert de-duplication token
  `table:topic:partition:first-last`; the tables set
  `non_replicated_deduplication_window`, so a retried batch is a no-op. Sealed
  batches are inserted in the order they were sealed, and Kafka offsets of a
  partition are committed only after all its inserts up to them succeeded
  (at-least-once delivery into ClickHouse).
- The consumer loop does not wait for a flush: it starts one in the background
  (one at a time) and goes on fetching and mapping into new buffers while
  ClickHouse inserts (chDB and the HTTP client release the GIL there). It waits
  for the flush under way only when all buffers together reach
  `max_buffer_rows` or `max_buffer_bytes`, so the buffer stays bounded in rows
  and in memory: rows alone let records of up to a MiB each (a dead letter
  keeps the rejected bytes) fill 500,000 rows, hundreds of GB, while an insert
  lasted (a server that stops answering holds one up to its deadline).
- Every row carries its source offset. Before the first record of a newly
  assigned partition is buffered, the sink reads, per table, which offsets at or
  after the committed one are already stored and skips them, so a crash between
  insert and commit (or mid-way through a multi-part insert) never duplicates
  rows: exactly-once as seen by queries. The committed offset is waited for,
  never guessed: while Kafka does not answer, the wait is logged
  (`kafka_waiting`), a stop ends it, and a drain ends with `KafkaStalled`
  (`sinks/consumer.py`), nothing of the partition buffered. The read itself
  (`stored_offsets.py`) reads a projection sorted by the kafka columns, so it stays
  cheap on a store of months; one a server stops at its time limit is logged as
  `stored_offsets_read_slow` with what to do, one that fails otherwise (a server
  that does not answer within the request deadline included) as
  `clickhouse_unavailable`; either is retried with backoff until
  it succeeds or the sink is told to stop, nothing of the partition buffered.
- When an insert fails (ClickHouse down, or a server not done within the
  insert's deadline, `sinks.clickhouse.connection.WRITE_DEADLINE_S`: a stalled
  request is cut, never waited on for ever) every partition is paused, so nothing
  more is fetched and the buffer stays bounded, while the consumer keeps polling
  (its group membership stays alive). The flush is retried with exponential
  backoff, the failed batches first and unchanged (same rows, same tokens);
  when it succeeds the partitions resume and the backlog drains.
- Offsets are those of one Kafka: `kafka_source.py` refuses a rebuilt Kafka
  at start, or starts a new epoch whose `offset_bases` shift every stored
  offset (rows, skip-sets, tokens, versions) past the earlier epochs; Kafka
  commits always use the real offsets.
- A commit Kafka refuses or does not answer (the broker restarting) is kept and
  tried again at the next flush, or after `flush_interval_s` when no record comes:
  a partition that got no record after it would otherwise stay behind its stored
  rows for good (lag that never ends, and a restart re-reading what is stored).
- On revocation the sink tries one flush; buffers it cannot write are dropped
  uncommitted and re-read by the next owner.
- A record a mapper cannot turn into rows - `RecordInvalid`, or any other
  exception (an engine bug, a value no ClickHouse column holds) - is skipped,
  counted (`chainwatch_sink_invalid_records_total`) and logged with its
  topic/partition/offset (the first of a topic at once, then one line per
  topic and 30 s saying how many more there were); the sink never exits on data.
  A keyless input record read from another partition than its id's
  (`RecordForwarded`) is not invalid: the engine forwards a copy there and the
  copy's rows are stored; the original is skipped and counted apart
  (`chainwatch_sink_forwarded_records_total`), not logged (the engine logs it).
  A keyed one is invalid, as it is the engine's dead letter (`schemas.placement`).
- A batch that fails because of its rows (`rows_at_fault`: the client cannot
  serialise a value, or ClickHouse answers a data error code) is not retried
  as an outage - it would fail for ever and hold every partition paused -
  but split in halves, down to the single rows no insert takes; those are
  skipped, counted and logged (`row_refused_by_clickhouse`) and the rest is
  stored. The halves' de-duplication tokens derive from the batch's, so a
  retry after an outage mid-way stores nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import ClickHouseError, DataError, OperationalError

from schemas.kafka_security import Kafka
from schemas.log_throttle import LogThrottle
from sinks.backoff import Backoff
from sinks.clickhouse import metrics
from sinks.clickhouse.connection import server_code
from sinks.clickhouse.deadline_pool import deadlines_of
from sinks.clickhouse.mapping import RecordForwarded, RecordInvalid, RecordMapper, Row, Table
from sinks.clickhouse.stored_offsets import (
    READ_BACK_MAX_EXECUTION_S,
    ReadBackMalformed,
    Stored,
    read_cut,
    read_stored,
    slow_read_fix,
)
from sinks.consumer import (
    KafkaWaits,
    commit_within,
    consume,
    new_consumer,
    start_consumer,
    stop_consumer,
)
from sinks.stop_race import unless_stopped

log = structlog.stdlib.get_logger(__name__)

FETCH_RECORDS = 5_000
"""Records mapped per event-loop turn: mapping is synchronous, and a turn of 50,000
records blocked heartbeats long enough on a loaded machine to lose the group."""

INSERT_SETTINGS: dict[str, int] = {"max_partitions_per_insert_block": 0}
"""Any number of monthly partitions per batch: ClickHouse refuses a block spanning more
than 100 by default (`TOO_MANY_PARTS`), so 101 valid backfilled scans a month apart
failed every retry of their batch, and the sink - which retries a failed insert as an
outage - stored nothing more."""


_DATA_ERROR_CODES = frozenset({6, 27, 53, 69, 70, 72, 117, 131, 252, 321, 349})
"""ClickHouse error codes that name the inserted data, not the server: CANNOT_PARSE_TEXT,
CANNOT_PARSE_INPUT_ASSERTION_FAILED, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND,
CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE,
TOO_MANY_PARTS (partitions per block), VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE,
CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN."""


def rows_at_fault(exc: BaseException) -> bool:
    """Whether an insert failed because of its rows (the same rows fail every retry), not
    because ClickHouse is unavailable (then the batch is retried unchanged).

    The client's serialisation errors (a lone surrogate in a String, a number a column
    does not hold) and the server's data error codes are the rows'; a connection
    failure, a timeout or any other server error is not: when in doubt, retry.
    """
    if isinstance(exc, OperationalError):
        return False
    if isinstance(exc, DataError):
        return True
    if not isinstance(exc, ClickHouseError):
        return isinstance(
            exc, ValueError | TypeError | AttributeError | OverflowError | struct.error
        )
    return server_code(exc) in _DATA_ERROR_CODES


class Inserter(Protocol):
    def insert(self, table: str, rows: Any, **kwargs: Any) -> Any: ...
    def query(self, sql: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class SinkConfig:
    flush_rows: int = 50_000
    flush_interval_s: float = 1.0
    max_buffer_rows: int = 500_000
    max_buffer_bytes: int = 512 << 20
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 30.0


@dataclass
class _Buffer:
    first_offset: int
    since: float
    last_offset: int = -1
    rows: dict[str, list[Row]] = field(default_factory=dict)
    size: int = 0
    bytes: int = 0
    """Bytes of the records mapped into it (keys and values; one found stored already
    too): what its rows weigh in memory, roughly."""
    refused: dict[str, int] = field(default_factory=dict)
    """table -> rows ClickHouse refused (skipped, logged): not written."""


@dataclass
class SinkStats:
    rows_written: int = 0
    batches: int = 0
    retries: int = 0
    skipped_already_stored: int = 0
    invalid_records: int = 0
    forwarded_records: int = 0
    max_buffered_rows: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        with self.sink._waits.ours():  # a flush to ClickHouse, inside the fetch's wait
            await self.sink.release(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.sink.forget_stored(list(assigned))


class StopRequested(Exception):
    """The stop event was set while waiting for ClickHouse."""


class ClickHouseSink:
    def __init__(
        self,
        *,
        bootstrap: Kafka,
        group_id: str,
        client: Inserter,
        mappers: Mapping[str, RecordMapper],
        config: SinkConfig | None = None,
        on_flush: Callable[[SinkStats], None] | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        offset_bases: Mapping[str, int] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.client = client
        self.mappers = dict(mappers)
        self.config = config or SinkConfig()
        self.on_flush = on_flush
        self.consumer_options = dict(consumer_options or {})
        self.offset_bases = {t: b for t, b in (offset_bases or {}).items() if b}
        """Per topic, added to Kafka offsets before they are stored (`kafka_source.py`)."""
        self.stats = SinkStats()
        self._invalid_log = InvalidRecordLog()
        self._tables: dict[str, Table] = {
            t.name: t for mapper in self.mappers.values() for t in mapper.tables
        }
        self._buffers: dict[TopicPartition, _Buffer] = {}
        """Open buffers, still taking rows."""
        self._sealed: list[tuple[TopicPartition, _Buffer]] = []
        """Sealed by a flush, not yet stored: inserted in this order, never changed."""
        self._flush_task: asyncio.Task[bool] | None = None
        """The loop's background flush, while it runs (or until its result is read)."""
        self._stored: dict[tuple[str, TopicPartition], Stored] = {}
        self._loaded: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._waits = KafkaWaits(f"Kafka at {bootstrap}")
        self._stop = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._failing_since: float | None = None
        self._next_try = 0.0
        self._uncommitted: dict[TopicPartition, int] = {}
        """Offsets stored in ClickHouse whose commit failed: tried again (`_commit`)."""
        self._commit_again_at = 0.0
        self._backoff = Backoff(self.config.initial_backoff_s, self.config.max_backoff_s)

    # --- stored offsets ------------------------------------------------------

    def forget_stored(self, partitions: list[TopicPartition]) -> None:
        """A (re-)assigned partition reloads its stored offsets before its first record."""
        for tp in partitions:
            self._loaded.discard(tp)

    async def load_stored_offsets(self, partitions: list[TopicPartition]) -> None:
        consumer = self._consumer
        for tp in partitions:
            self._loaded.add(tp)
            committed = await self._committed(consumer, tp) if consumer is not None else None
            since = int(committed or 0) + self.offset_bases.get(tp.topic, 0)
            for table in self.mappers[tp.topic].tables:
                with self._waits.ours():  # not Kafka's: the next `_committed` waits afresh
                    stored = await self._read_stored(table.name, tp, since)
                self._stored[(table.name, tp)] = stored

    async def _committed(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """The group's committed offset of `tp`. aiokafka asks for it until a coordinator
        answers, with no deadline: the wait goes through the loop's `KafkaWaits` (logged
        while it lasts; a drain's ends with `KafkaStalled`) and ends with `StopRequested`
        when told to stop. Without it no record of `tp` is buffered: its skip-set starts
        there."""
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            answered, committed = await self._waits.within(
                consumer.committed(tp),
                stopped,
                f"no committed offset of {tp.topic}[{tp.partition}]",
            )
        finally:
            stopped.cancel()
        if not answered:
            raise StopRequested
        return committed

    async def _read_stored(self, table: str, tp: TopicPartition, since: int) -> Stored:
        """`read_stored`, retried with backoff until it succeeds (nothing of `tp` is
        buffered before), or `StopRequested` once told to stop. A read the server stopped
        for taking too long is logged as such (`stored_offsets_read_slow`, with what to
        do), an answer not of the query's shape as such (`stored_offsets_read_malformed`),
        any other failure as ClickHouse being unavailable."""
        read = functools.partial(read_stored, self.client, table, tp.topic, tp.partition, since)
        backoff = Backoff(self.config.initial_backoff_s, self.config.max_backoff_s)
        delay = backoff.next()
        while True:
            started = time.monotonic()
            try:
                stored = await self._read_unless_stopped(read)
            except Exception as exc:  # ClickHouse unreachable or slow: wait, unless told to stop
                self.stats.retries += 1
                metrics.INSERT_RETRIES.inc()
                metrics.PAUSED.set(1)  # the partition is read from nowhere meanwhile
                if read_cut(exc):
                    log.warning(
                        "stored_offsets_read_slow",
                        table=table,
                        topic=tp.topic,
                        partition=tp.partition,
                        took_s=round(time.monotonic() - started, 1),
                        limit_s=READ_BACK_MAX_EXECUTION_S,
                        error=_short(exc),
                        retry_in_s=delay,
                        fix=slow_read_fix(table),
                    )
                elif isinstance(exc, ReadBackMalformed):
                    log.warning("stored_offsets_read_malformed", error=str(exc), retry_in_s=delay)
                else:
                    log.warning("clickhouse_unavailable", error=_short(exc), retry_in_s=delay)
                try:
                    async with asyncio.timeout(delay):  # not wait_for: 3.11's may drop a cancel
                        await self._stop.wait()
                except TimeoutError:
                    delay = backoff.next()
                    continue
                raise StopRequested from exc
            if self._failing_since is None:  # else the inserts' pause goes on
                metrics.PAUSED.set(0)
            return stored

    async def _read_unless_stopped(self, read: Callable[[], Stored]) -> Stored:
        """`read()` on a thread, or `StopRequested` once told to stop: a server's requests
        under way are aborted (`Deadlines.abort`, as the sink's start does), so a stop
        no longer waits for a slow read-back (the server's limit is 100 s: the stop
        deadline cut the sink at 30 s, exit 1). Nothing is lost: an insert the abort
        refuses commits nothing (its records are read again on restart). An embedded
        chDB's read cannot be aborted (and the store's close waits for it): it is waited
        for and its answer taken, the stop seen next (`stop_race.unless_stopped`)."""
        deadlines = deadlines_of(getattr(self.client, "client", None))
        return await unless_stopped(
            read,
            self._stop,
            abort=None if deadlines is None else deadlines.abort,
            stopped=StopRequested,
            answer_unabortable=True,
        )

    # --- buffering -----------------------------------------------------------

    def add_many(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Map and buffer consecutive records of one partition (the hot path)."""
        if not records:
            return
        mapper = self.mappers[tp.topic]
        base = self.offset_bases.get(tp.topic)
        if base:  # a later Kafka epoch: stored offsets continue after the earlier ones
            records = [dataclasses.replace(r, offset=r.offset + base) for r in records]
        buf = self._buffers.get(tp)
        if buf is None:
            buf = self._buffers[tp] = _Buffer(
                first_offset=records[0].offset, since=time.monotonic()
            )
        stored = {
            table.name: found
            for table in mapper.tables
            if (found := self._stored.get((table.name, tp))) is not None and not found.empty
        }
        invalid = forwarded = skipped = added = weight = 0
        for record in records:
            try:
                by_table = mapper.rows(record)
            except RecordForwarded:  # its copy on its id's partition is stored
                forwarded += 1
                continue
            except Exception as exc:  # whatever a mapper raises, the record is at fault: skip it
                invalid += 1
                self._invalid_log.skipped(record, exc)
                continue
            for table, rows in by_table.items():
                if not rows:
                    continue
                if stored:
                    known = stored.get(table)
                    if known is not None and known.has(record.offset):
                        skipped += 1
                        continue
                target = buf.rows.get(table)
                if target is None:
                    target = buf.rows[table] = []
                target.extend(rows)
                added += len(rows)
            weight += len(record.value or b"") + len(record.key or b"")
        buf.size += added
        buf.bytes += weight
        buf.last_offset = records[-1].offset
        if invalid:
            self.stats.invalid_records += invalid
            metrics.INVALID.labels(tp.topic).inc(invalid)
        if forwarded:
            self.stats.forwarded_records += forwarded
            metrics.FORWARDED.labels(tp.topic).inc(forwarded)
        if skipped:
            self.stats.skipped_already_stored += skipped
            metrics.SKIPPED.labels(tp.topic).inc(skipped)

    @property
    def buffered_rows(self) -> int:
        return sum(buf.size for buf in self._buffers.values()) + sum(
            buf.size for _tp, buf in self._sealed
        )

    @property
    def buffered_bytes(self) -> int:
        return sum(buf.bytes for buf in self._buffers.values()) + sum(
            buf.bytes for _tp, buf in self._sealed
        )

    def _full(self) -> bool:
        """All buffers together hold `max_buffer_rows` rows or `max_buffer_bytes` bytes."""
        return (
            self.buffered_rows >= self.config.max_buffer_rows
            or self.buffered_bytes >= self.config.max_buffer_bytes
        )

    def _due(self) -> bool:
        if self._failing_since is not None:
            return time.monotonic() >= self._next_try
        now = time.monotonic()
        if self._full() or (self._uncommitted and now >= self._commit_again_at):
            return True
        return any(
            buf.size >= self.config.flush_rows or now - buf.since >= self.config.flush_interval_s
            for buf in self._buffers.values()
        )

    # --- flushing ------------------------------------------------------------

    def _insert_in_order(
        self, batches: list[tuple[TopicPartition, _Buffer]]
    ) -> tuple[int, Exception | None]:
        """Insert batches in order until one fails: (how many are stored, the failure)."""
        for stored, (tp, buf) in enumerate(batches):
            try:
                self._insert_batch(tp, buf)
            except Exception as exc:
                return stored, exc
        return len(batches), None

    def _insert_batch(self, tp: TopicPartition, buf: _Buffer) -> None:
        buf.refused.clear()  # a retry after an outage mid-way finds them again
        for table, rows in buf.rows.items():
            token = f"{table}:{tp.topic}:{tp.partition}:{buf.first_offset}-{buf.last_offset}"
            self._insert_rows(tp, buf, table, rows, token)

    def _insert_rows(
        self, tp: TopicPartition, buf: _Buffer, table: str, rows: list[Row], token: str
    ) -> None:
        """Insert `rows`; when the rows themselves are at fault (`rows_at_fault`), the
        two halves are inserted on their own, down to the rows no insert takes, which
        are skipped and logged like a record no mapper can map. The halves' tokens
        follow from the batch's, so a retry after an outage mid-way takes the same
        path and ClickHouse drops what it already has."""
        try:
            self.client.insert(
                table,
                rows,
                column_names=list(self._tables[table].columns),
                settings={"insert_deduplication_token": token, **INSERT_SETTINGS},
            )
        except Exception as exc:
            if not rows_at_fault(exc):
                raise
            if len(rows) == 1:
                self._refused_row(tp, buf, table, rows[0], exc)
                return
            half = len(rows) // 2
            self._insert_rows(tp, buf, table, rows[:half], f"{token}/a")
            self._insert_rows(tp, buf, table, rows[half:], f"{token}/b")

    def _refused_row(
        self, tp: TopicPartition, buf: _Buffer, table: str, row: Row, exc: BaseException
    ) -> None:
        offset = row[list(self._tables[table].columns).index("kafka_offset")]
        buf.refused[table] = buf.refused.get(table, 0) + 1
        log.warning(
            "row_refused_by_clickhouse",
            table=table,
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            error=_short(exc),
        )

    async def flush(self) -> bool:
        """Insert every buffer, then commit the partitions now fully stored.

        Returns False when ClickHouse refused a batch; the unwritten buffers are
        kept unchanged, so the retry sends the same batches under the same tokens.
        One flush at a time: a revocation (aiokafka's coordinator task) that comes
        while the loop's flush awaits an insert waits for it, instead of inserting
        the same buffers a second time.
        """
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> bool:
        if self._buffers:  # seal: records mapped from now on go to new buffers
            self._sealed.extend(self._buffers.items())
            self._buffers = {}
        if not self._sealed:
            await self._commit({})  # a commit that failed before, if any
            return True
        started = time.perf_counter()
        batches = list(self._sealed)
        # one thread hop for all of them: the loop, mapping meanwhile, yields rarely
        stored, failure = await asyncio.to_thread(self._insert_in_order, batches)
        if failure is not None:  # ClickHouse down or refusing: back off, keep the batches
            tp = batches[stored][0]
            log.warning(
                "insert_failed", topic=tp.topic, partition=tp.partition, error=_short(failure)
            )
        commits: dict[TopicPartition, int] = {}
        for tp, buf in batches[:stored]:
            for table, rows in buf.rows.items():
                written = len(rows) - buf.refused.get(table, 0)
                metrics.ROWS_WRITTEN.labels(table).inc(written)
                self.stats.rows_written += written
                self.stats.batches += 1
            if buf.refused:
                refused = sum(buf.refused.values())
                self.stats.invalid_records += refused
                metrics.INVALID.labels(tp.topic).inc(refused)
            commits[tp] = buf.last_offset + 1
        done = {id(buf) for _tp, buf in batches[:stored]}
        # (a revocation while ClickHouse was failing may have dropped some meanwhile)
        self._sealed = [(tp, buf) for tp, buf in self._sealed if id(buf) not in done]
        ok = failure is None
        await self._commit(commits)
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.BUFFERED_ROWS.set(self.buffered_rows)
        if self.on_flush is not None and commits:
            self.on_flush(self.stats)
        return ok

    async def _commit(self, commits: dict[TopicPartition, int]) -> None:
        """Commit `commits` with those that failed before (`_uncommitted`); a failure
        keeps them all for the next flush, or for `flush_interval_s` from now."""
        consumer = self._consumer
        pending = self._uncommitted
        if not (commits or pending) or consumer is None:
            return
        assigned = consumer.assignment()
        wanted = {tp: off for tp, off in pending.items() if tp in assigned}
        for tp, off in commits.items():
            if tp in assigned:
                wanted[tp] = max(off, wanted.get(tp, off))
        self._uncommitted = {}
        if not wanted:
            return
        mine = {tp: off - self.offset_bases.get(tp.topic, 0) for tp, off in wanted.items()}
        try:
            await commit_within(consumer, mine)
        except (KafkaError, TimeoutError) as exc:  # the rows are stored, the skip-set covers it
            self._uncommitted = wanted
            self._commit_again_at = time.monotonic() + self.config.flush_interval_s
            log.warning(
                "commit_failed",
                error=_short(exc),
                partitions=len(wanted),
                again_in_s=self.config.flush_interval_s,
            )
            return
        if pending:
            log.info("committed_after_failure", partitions=len(wanted))

    async def release(self, partitions: list[TopicPartition]) -> None:
        """Revocation: write what we can; what we cannot is re-read by the next owner."""
        if (self._buffers or self._sealed) and self._failing_since is None:
            await self.flush()  # after the loop's flush under way, if any
        revoked = set(partitions)
        self._sealed = [(tp, buf) for tp, buf in self._sealed if tp not in revoked]
        for tp in partitions:  # its next owner reads from its last commit (the skip-set)
            self._uncommitted.pop(tp, None)
        for tp in partitions:
            self._buffers.pop(tp, None)
            self._loaded.discard(tp)
            for table in self.mappers[tp.topic].tables:
                self._stored.pop((table.name, tp), None)

    def _pause(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._backoff.reset()
            log.warning("sink_paused", buffered_rows=self.buffered_rows)
        self.stats.retries += 1
        metrics.INSERT_RETRIES.inc()
        metrics.PAUSED.set(1)
        self._next_try = now + self._backoff.next()
        consumer.pause(*consumer.assignment())

    def _resume(self, consumer: AIOKafkaConsumer) -> None:
        if self._failing_since is not None:
            log.info("sink_resumed", paused_s=round(time.monotonic() - self._failing_since, 3))
        self._failing_since = None
        metrics.PAUSED.set(0)
        consumer.resume(*consumer.paused())

    # --- main loop -----------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> SinkStats:
        """Consume until `stop` is set (or, with `drain`, until caught up with every topic)."""
        self._stop = stop
        self._waits = KafkaWaits(f"Kafka at {self.bootstrap}", drain=drain)
        consumer = new_consumer(
            self.bootstrap,
            self.group_id,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            **self.consumer_options,
        )
        self._consumer = consumer
        consumer.subscribe(list(self.mappers), listener=_Rebalance(self))
        if not await start_consumer(consumer, stop, self._waits):
            self._consumer = None
            return self.stats
        try:
            await consume(consumer, list(self.mappers), self, stop, drain=drain, waits=self._waits)
            await self._settle_flush(consumer, wait=True)
            while not await self.flush():  # drain: keep trying until stored or told to stop
                if stop.is_set():
                    log.warning("sink_stopped_with_unwritten_rows", rows=self.buffered_rows)
                    break
                self._pause(consumer)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._backoff.current_s):
                        await stop.wait()
        except StopRequested:
            log.warning("sink_stopped_with_unwritten_rows", rows=self.buffered_rows)
        finally:
            task, self._flush_task = self._flush_task, None
            if task is not None:  # an error left the loop: the insert under way ends first
                with contextlib.suppress(Exception):
                    await task
            self._consumer = None
            await stop_consumer(consumer)  # within its deadline (`STOP_S`)
        return self.stats

    # --- the consumer loop's hooks (sinks/consumer.py) -------------------------

    def fetch_limit(self, consumer: AIOKafkaConsumer) -> int:
        if self._failing_since is not None:
            consumer.pause(*consumer.assignment())  # also partitions assigned meanwhile
        return min(self.config.flush_rows, FETCH_RECORDS)

    async def handle(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if tp not in self._loaded:  # first records since (re-)assignment
            await self.load_stored_offsets([tp])
        metrics.RECORDS.labels(tp.topic).inc(len(records))
        self.add_many(tp, records)

    async def after_batch(self, consumer: AIOKafkaConsumer) -> None:
        buffered = self.buffered_rows
        self.stats.max_buffered_rows = max(self.stats.max_buffered_rows, buffered)
        metrics.BUFFERED_ROWS.set(buffered)
        # bounded: at the limit, wait for the flush under way before fetching more
        await self._settle_flush(consumer, wait=self._full())
        if self._flush_task is None and self._due():
            self._flush_task = asyncio.create_task(self.flush())
        if self._flush_task is not None:
            # getmany returns without yielding while fetched records are ready: let the
            # flush start, and take its insert's result when it is in, every turn
            await asyncio.sleep(0)

    async def _settle_flush(self, consumer: AIOKafkaConsumer, *, wait: bool) -> None:
        """Read the result of the background flush once it is done: resume, or pause."""
        task = self._flush_task
        if task is None or not (task.done() or wait):
            return
        try:
            ok = await task  # a bug in the flush is raised here, not lost with the task
        finally:
            self._flush_task = None
        if ok:
            if self._failing_since is not None:
                self._resume(consumer)
        else:
            self._pause(consumer)

    def idle(self) -> bool:
        return True  # what is buffered is flushed after the loop


class InvalidRecordLog:
    """Logs skipped records without flooding: a topic's first at once, then one line per
    topic and `window_s` with how many were skipped since (the counter metric has all).

    A producer that writes garbage to an output topic can send thousands of records a
    second; one warning line each buried everything else on the night shift's screen.
    """

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = LogThrottle(window_s, clock)

    def skipped(self, record: ConsumerRecord[bytes, bytes], exc: BaseException) -> None:
        held_back = self._throttle.admit(record.topic)
        if held_back is None:
            return
        log.warning(
            "invalid_record_skipped",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=_short(exc),
            bug=not isinstance(exc, RecordInvalid),
            **({"more_since_last_line": held_back} if held_back else {}),
        )


ERROR_TEXT_MAX = 600
"""Characters of a skipped record's error kept in its log line: the line stays bounded
whatever a record holds, and the longest message of ours (`wrong_partition`'s, ~430
with a 64-character key) keeps its advice (cut at 200, it lost what to fix)."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:ERROR_TEXT_MAX] if text else ''}"
