"""Reading a whole topic, or its records since a time, to the end it had when asked.

A replay's results (alerts, order state, dead letters), `chainwatch deliveries` (the
notifier's delivery log and dead letters) and the notifier's held messages
(`webhooks.held.read_held`) read a topic so, with a consumer of no group: it commits
nothing and creates nothing. (The notifier's silences, `webhooks.silence_follower`, and
its warm-up, `webhooks.warmup`, read to an end too, their own way: live rounds, and a
range below each partition's committed position.)

A partition is done when the consumer's position reaches the end offset read at the
start (positions also move past transaction markers and compacted gaps, where the last
record's offset never does); records written after that are not read. A read that makes
no progress for `stall_s` is an error, not a hang, and so is any step Kafka does not
answer within it (aiokafka waits for a position without a deadline), each a
`TopicUnreadable` naming the step; the reader's close gets `close_s`. With
`own_deadlines=False` the caller bounds the whole read instead (`read_held`: one
`TimeoutError` past its deadline, Kafka's errors as they are).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks.consumer import new_consumer, stop_consumer
from sinks.errors import SinkError

POLL_MS = 500
"""The longest one fetch waits for records (the stall is counted across fetches)."""

T = TypeVar("T")


class TopicUnreadable(SinkError):
    """A read that Kafka did not answer, or that made no progress (reported as the
    CLI's own errors: one line, exit 1)."""


async def read_to_end(
    kafka: Kafka,
    topic: str,
    partitions: int,
    *,
    stall_s: float,
    close_s: float,
    since_ms: int | None = None,
    isolation_level: str = "read_committed",
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` (its partitions 0..`partitions`-1, in partition order) from
    its beginning, or from the first record at or after `since_ms` (by record timestamp),
    to the end offsets read at the start."""
    async with TopicReader(
        kafka, topic, partitions, stall_s=stall_s, close_s=close_s, isolation_level=isolation_level
    ) as reader:
        return await reader.to_end(since_ms=since_ms)


class TopicReader:
    """`read_to_end`, kept open: `to_end()` reads from where the reader stands (the
    first call: the beginning, or `since_ms`) to the end offsets asked at that call, so a
    next call returns only what was written since (`chainwatch deliveries resend`
    checks, before each re-send, what the notifier delivered meanwhile).

    `own_deadlines` (keyword only): True, each step within `stall_s` and no progress
    for `stall_s` are a `TopicUnreadable` that names them (a command's one line); False,
    the reader sets no deadline and keeps Kafka's errors as they are, for a caller that
    bounds the whole read with its own (`webhooks.held.read_held`: a `TimeoutError`
    past `call_s`, retried). `stall_s` also makes the requests' timeout (half of it);
    `poll_ms` is the longest one fetch waits."""

    def __init__(
        self,
        kafka: Kafka,
        topic: str,
        partitions: int,
        *,
        stall_s: float,
        close_s: float,
        isolation_level: str = "read_committed",
        own_deadlines: bool = True,
        poll_ms: int = POLL_MS,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.stall_s = stall_s
        self.close_s = close_s
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = new_consumer(
            kafka, None, request_timeout_ms=int(stall_s * 1000 / 2), isolation_level=isolation_level
        )
        self.own_deadlines = own_deadlines
        self.poll_ms = poll_ms
        self._positioned = False

    async def __aenter__(self) -> TopicReader:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self._step(self.consumer.start(), "start a reader")

    async def close(self) -> None:
        # read or failed already: a stop cut at its deadline loses nothing
        await stop_consumer(self.consumer, within_s=self.close_s)

    async def _step(self, step: Awaitable[T], what: str) -> T:
        if not self.own_deadlines:
            return await step
        return await read_step(step, self.kafka, what, self.stall_s)

    async def _starts(
        self, ends: dict[TopicPartition, int], since_ms: int | None
    ) -> dict[TopicPartition, int]:
        """Where each partition's read begins: the reader's position; the first time,
        the beginning, or the first record at or after `since_ms` (a partition with none
        yet is put at its end, where a next call reads on)."""
        consumer, topic = self.consumer, self.topic
        if self._positioned:
            starts = {}
            for tp in self.tps:
                where = f"give the reading position of {tp.topic}[{tp.partition}]"
                starts[tp] = await self._step(consumer.position(tp), where)
            return starts
        if since_ms is None:
            await consumer.seek_to_beginning(*self.tps)
            return dict.fromkeys(self.tps, 0)
        found = await self._step(
            consumer.offsets_for_times(dict.fromkeys(self.tps, since_ms)),
            f"look up offsets of {topic} by time",
        )
        starts = {tp: at.offset for tp, at in found.items() if at is not None}
        for tp in self.tps:
            consumer.seek(tp, starts.get(tp, ends[tp]))
        return starts

    async def to_end(self, *, since_ms: int | None = None) -> list[ConsumerRecord[bytes, bytes]]:
        """The records from the reader's position (or, the first time, from the
        beginning or `since_ms`) to the end offsets asked now, in partition order."""
        records: list[ConsumerRecord[bytes, bytes]] = []
        async for batch in self.batches_to_end(since_ms=since_ms):
            records.extend(batch)
        records.sort(key=lambda m: m.partition)  # stable: each partition's in offset order
        return records

    async def batches_to_end(
        self, *, since_ms: int | None = None
    ) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """`to_end`'s records a fetch at a time (each partition's in offset order, the
        partitions interleaved), for a caller that keeps less than all of them."""
        consumer, topic, stall_s, tps = self.consumer, self.topic, self.stall_s, self.tps
        if not self._positioned:
            consumer.assign(tps)
        ends = await self._step(consumer.end_offsets(tps), f"give the end offsets of {topic}")
        starts = await self._starts(ends, since_ms)
        self._positioned = True
        remaining = {tp: ends[tp] for tp in tps if starts.get(tp, ends[tp]) < ends[tp]}
        read = dict(remaining)
        last_progress = time.monotonic()
        while remaining:
            batch = await self._step(
                consumer.getmany(*remaining, timeout_ms=self.poll_ms), f"return records of {topic}"
            )
            records: list[ConsumerRecord[bytes, bytes]] = []
            for tp, messages in batch.items():
                end = remaining.get(tp, -1)
                records.extend(m for m in messages if m.offset < end)
            if records:
                yield records
            for tp in list(remaining):
                where = f"give the reading position of {tp.topic}[{tp.partition}]"
                if await self._step(consumer.position(tp), where) >= remaining[tp]:
                    del remaining[tp]
            if batch:
                last_progress = time.monotonic()
            elif remaining and self.own_deadlines and time.monotonic() - last_progress > stall_s:
                raise TopicUnreadable(
                    f"reading {topic} made no progress for {stall_s:.0f}s "
                    f"({len(remaining)} partitions not read to their end)"
                )
        for tp, end in read.items():  # a fetch may have gone past the end: the next call
            where = f"give the reading position of {tp.topic}[{tp.partition}]"
            if await self._step(consumer.position(tp), where) > end:
                consumer.seek(tp, end)  # reads those records, not after them


async def read_step(step: Awaitable[T], kafka: Kafka, what: str, within_s: float) -> T:
    """One step of a read within `within_s`, or one line naming it (a start or an
    end-offsets request Kafka did not answer ended as "internal error: TimeoutError");
    `schemas.deadline`: Python 3.11's `wait_for` may drop a Ctrl-C."""
    try:
        async with deadline(within_s):
            return await step
    except (TimeoutError, KafkaError) as exc:
        why = (
            f"within {within_s:.0f}s"
            if isinstance(exc, TimeoutError)
            else f"({type(exc).__name__})"
        )
        raise TopicUnreadable(
            f"Kafka at {kafka} did not {what} {why}; check that the broker answers"
        ) from None
