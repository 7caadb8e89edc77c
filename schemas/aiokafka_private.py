"""aiokafka's private state that streams and sinks both read, in one named place.

aiokafka gives no public way to stop a producer's sending without first flushing
what it holds: `AIOKafkaProducer.stop()` waits for the pending batches, and the
sender retries them for as long as Kafka refuses. A stop cut short (`sinks.
producer_start`) and a producer given up on (the gateway's `streams.ingest.
publisher`) both cancel the sender's task themselves, so both reach into
`producer._sender`. Should an aiokafka upgrade move it, the accessor gives None
(the callers then only stop the producer as aiokafka does) and its test in
tests/schemas/test_aiokafka_private.py fails on the real producer. Both then drop
what the stopped sender will never send (`drop_unsent`): aiokafka's own close waits
for it.

Also what both must know of aiokafka's idempotent producer: which broker refusals
spend it for good (`spends_producer`: the worker stops, the notifier renews its log
producer).

In `schemas` as the one package both streams and sinks import (their
independence is an import-linter contract).
A private reach used in one module only stays there, named where it is used
(`streams.kafka_transport`, `sinks.webhooks.done`, the publisher's transaction
waiter).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import OutOfOrderSequenceNumber, ProducerClosed, ProducerFenced

from schemas.bounded_wait import retrieve

SENDER_STOP_S = 2.0
"""How long a stop waits for a producer's sender it cancelled (the records it still held
are lost, as the stop's deadline says): a sender that swallowed the cancel is left."""


def sender_task(producer: object) -> asyncio.Task[Any] | None:
    """The producer's sender task (`AIOKafkaProducer._sender.sender_task`), None before
    its start or when aiokafka has it no more.

    aiokafka-private: checked against aiokafka 0.14.0, where `Sender.start` creates
    the task (after the producer id of an idempotent producer) and `Sender.close`
    cancels and awaits it without a bound."""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return task if isinstance(task, asyncio.Task) else None


def drop_unsent(producer: object) -> None:
    """Cancel every batch a producer whose sender was stopped still holds, and each of its
    records' futures, taking the outcome of those already ended.

    With its sender stopped nothing sends them, and `stop()` waits for them in a task of
    its own (`MessageAccumulator.close`) that it leaves pending when the sender is done
    first, or when the stop is cut (`sinks.producer_start`): left so, asyncio logged
    "Task was destroyed but it is pending!" once the producer was collected, and a batch
    failed by the sender before its stop "Future exception was never retrieved".
    Cancelled, not failed: aiokafka's failure also fails the batch's drain waiter, which
    nothing reads either. A record's future (`send`'s; `send_and_wait` awaits it) fails
    with `ProducerClosed`, a KafkaError as a refusal would be, so nothing awaits it for
    ever and its awaiter is not cancelled as if its own task were (the notifier's other
    endpoints send on a log producer it renews); taken here too, so one nobody awaits
    logs nothing (the gateway's batches have none).

    aiokafka-private (`_message_accumulator`, its `_batches` and `_pending_batches`, a
    batch's `future` and `_msg_futures`), checked against aiokafka 0.14.0; should an
    upgrade move them, nothing is done here.
    """
    accumulator = getattr(producer, "_message_accumulator", None)
    held = [
        *(b for queue in getattr(accumulator, "_batches", {}).values() for b in queue),
        *getattr(accumulator, "_pending_batches", ()),
    ]
    for batch in held:
        future = getattr(batch, "future", None)
        if isinstance(future, asyncio.Future):
            future.cancel()  # no-op for one that ended
            future.add_done_callback(retrieve)
        for record, *_ in getattr(batch, "_msg_futures", ()):
            if isinstance(record, asyncio.Future):
                if not record.done():
                    record.set_exception(
                        ProducerClosed("the producer stopped before Kafka took it")
                    )
                record.add_done_callback(retrieve)


def spends_producer(exc: BaseException) -> bool:
    """Whether the broker's refusal `exc` spends an idempotent producer for good: after
    OUT_OF_ORDER_SEQUENCE_NUMBER (seen after a broker restart with a batch in flight)
    aiokafka fails the batch but keeps its own numbering, so every later batch of the
    partition is refused the same; a fenced producer's id is refused. Only a new
    producer, with a new producer id, sends again.

    Checked against aiokafka 0.14.0 (`SendProduceReqHandler.handle_response`)."""
    return isinstance(exc, OutOfOrderSequenceNumber | ProducerFenced)
