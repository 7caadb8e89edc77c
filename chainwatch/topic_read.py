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
    consumer = new_consumer(
        kafka, None, request_timeout_ms=int(stall_s * 1000 / 2), isolation_level=isolation_level
    )
    await read_step(consumer.start(), kafka, "start a reader", stall_s)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await read_step(
            consumer.end_offsets(tps), kafka, f"give the end offsets of {topic}", stall_s
        )
        if since_ms is None:
            await consumer.seek_to_beginning(*tps)
            starts = dict.fromkeys(tps, 0)
        else:
            found = await read_step(
                consumer.offsets_for_times(dict.fromkeys(tps, since_ms)),
                kafka, f"look up offsets of {topic} by time", stall_s,
            )  # fmt: skip
            starts = {tp: at.offset for tp, at in found.items() if at is not None}
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
        remaining = {tp: ends[tp] for tp in tps if starts.get(tp, ends[tp]) < ends[tp]}
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
        records.sort(key=lambda m: m.partition)  # stable: each partition's in offset order
        return records
    finally:  # read or failed already: a stop cut at its deadline loses nothing
        await stop_consumer(consumer, within_s=close_s)


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
