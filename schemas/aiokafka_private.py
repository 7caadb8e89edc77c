"""aiokafka's private state that streams and sinks both read, in one named place.

aiokafka gives no public way to stop a producer's sending without first flushing
what it holds: `AIOKafkaProducer.stop()` waits for the pending batches, and the
sender retries them for as long as Kafka refuses. A stop cut short (`sinks.
producer_start`) and a producer given up on (the gateway's `streams.ingest.
publisher`) both cancel the sender's task themselves, so both reach into
`producer._sender`. Should an aiokafka upgrade move it, the accessor gives None
(the callers then only stop the producer as aiokafka does) and its test in
tests/schemas/test_aiokafka_private.py fails on the real producer.

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

from aiokafka.errors import OutOfOrderSequenceNumber, ProducerFenced

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


def spends_producer(exc: BaseException) -> bool:
    """Whether the broker's refusal `exc` spends an idempotent producer for good: after
    OUT_OF_ORDER_SEQUENCE_NUMBER (seen after a broker restart with a batch in flight)
    aiokafka fails the batch but keeps its own numbering, so every later batch of the
    partition is refused the same; a fenced producer's id is refused. Only a new
    producer, with a new producer id, sends again.

    Checked against aiokafka 0.14.0 (`SendProduceReqHandler.handle_response`)."""
    return isinstance(exc, OutOfOrderSequenceNumber | ProducerFenced)
