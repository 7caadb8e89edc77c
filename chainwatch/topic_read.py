"""Reading a whole topic, or its records since a time, to the end it had when asked.

A replay's results (alerts, order state, dead letters) and `chainwatch deliveries` (the
notifier's delivery log and dead letters) read a topic so, with a consumer of no group:
it commits nothing and creates nothing.

A partition is done when the consumer's position reaches the end offset read at the
start (positions also move past transaction markers and compacted gaps, where the last
record's offset never does); records written after that are not read. A read that makes
no progress for `stall_s` is an error, not a hang, and so is any step Kafka does not
answer within it (aiokafka waits for a position without a deadline); the reader's close
gets `close_s`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from chainwatch.errors import UserError
from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks.consumer import new_consumer, stop_consumer

POLL_MS = 500
"""The longest one fetch waits for records (the stall is counted across fetches)."""

T = TypeVar("T")


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
    checks, before each re-send, what the notifier delivered meanwhile)."""

    def __init__(
        self,
        kafka: Kafka,
        topic: str,
        partitions: int,
        *,
        stall_s: float,
        close_s: float,
        isolation_level: str = "read_committed",
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.stall_s = stall_s
        self.close_s = close_s
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = new_consumer(
            kafka, None, request_timeout_ms=int(stall_s * 1000 / 2), isolation_level=isolation_level
        )
        self._positioned = False

    async def __aenter__(self) -> TopicReader:
        await read_step(self.consumer.start(), self.kafka, "start a reader", self.stall_s)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        # read or failed already: a stop cut at its deadline loses nothing
        await stop_consumer(self.consumer, within_s=self.close_s)

    async def _starts(
        self, ends: dict[TopicPartition, int], since_ms: int | None
    ) -> dict[TopicPartition, int]:
        """Where each partition's read begins: the reader's position; the first time,
        the beginning, or the first record at or after `since_ms` (a partition with none
        yet is put at its end, where a next call reads on)."""
        consumer, kafka, topic, stall_s = self.consumer, self.kafka, self.topic, self.stall_s
        if self._positioned:
            starts = {}
            for tp in self.tps:
                where = f"give the reading position of {tp.topic}[{tp.partition}]"
                starts[tp] = await read_step(consumer.position(tp), kafka, where, stall_s)
            return starts
        if since_ms is None:
            await consumer.seek_to_beginning(*self.tps)
            return dict.fromkeys(self.tps, 0)
        found = await read_step(
            consumer.offsets_for_times(dict.fromkeys(self.tps, since_ms)),
            kafka, f"look up offsets of {topic} by time", stall_s,
        )  # fmt: skip
        starts = {tp: at.offset for tp, at in found.items() if at is not None}
        for tp in self.tps:
            consumer.seek(tp, starts.get(tp, ends[tp]))
        return starts

    async def to_end(self, *, since_ms: int | None = None) -> list[ConsumerRecord[bytes, bytes]]:
        """The records from the reader's position (or, the first time, from the
        beginning or `since_ms`) to the end offsets asked now, in partition order."""
        consumer, kafka, topic, stall_s, tps = (
            self.consumer, self.kafka, self.topic, self.stall_s, self.tps,
        )  # fmt: skip
        if not self._positioned:
            consumer.assign(tps)
        ends = await read_step(
            consumer.end_offsets(tps), kafka, f"give the end offsets of {topic}", stall_s
        )
        starts = await self._starts(ends, since_ms)
        self._positioned = True
        remaining = {tp: ends[tp] for tp in tps if starts.get(tp, ends[tp]) < ends[tp]}
        read = dict(remaining)
        records: list[ConsumerRecord[bytes, bytes]] = []
        last_progress = time.monotonic()
        while remaining:
            batch = await read_step(
                consumer.getmany(*remaining, timeout_ms=POLL_MS),
                kafka, f"return records of {topic}", stall_s,
            )  # fmt: skip
            for tp, messages in batch.items():
                end = remaining.get(tp, -1)
                records.extend(m for m in messages if m.offset < end)
            for tp in list(remaining):
                where = f"give the reading position of {tp.topic}[{tp.partition}]"
                if await read_step(consumer.position(tp), kafka, where, stall_s) >= remaining[tp]:
                    del remaining[tp]
            if batch:
                last_progress = time.monotonic()
            elif remaining and time.monotonic() - last_progress > stall_s:
                raise UserError(
                    f"reading {topic} made no progress for {stall_s:.0f}s "
                    f"({len(remaining)} partitions not read to their end)"
                )
        for tp, end in read.items():  # a fetch may have gone past the end: the next call
            where = f"give the reading position of {tp.topic}[{tp.partition}]"
            if await read_step(consumer.position(tp), kafka, where, stall_s) > end:
                consumer.seek(tp, end)  # reads those records, not after them
        records.sort(key=lambda m: m.partition)  # stable: each partition's in offset order
        return records


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
        raise UserError(
            f"Kafka at {kafka} did not {what} {why}; check that the broker answers"
        ) from None
