"""The producer of the notifier's log records, renewed when its producer id is spent.

An idempotent producer numbers its batches per partition, and the broker takes only the
next number. After a broker restart with a delivery-log record in flight (seen
2026-12-07, `chainwatch kafka stop` then `start`) the broker refused a batch with
OUT_OF_ORDER_SEQUENCE_NUMBER; aiokafka fails that batch but keeps its own numbering,
so every later batch was refused the same. `publish` retried for ever:
`publish_failed error=OutOfOrderSequenceNumber` every 10 s, no delivery made again (each
waits for its log record before its commit), the notifier still ready. Only a restart,
which gets a new producer id, mended it. (`ProducerFenced` spends a producer the same
way, and a sender task that ended sends nothing more.)

Now a send refused so stops that producer (bounded) and starts a new one, with a new
producer id (`log_producer_renewed`, counted), and raises: the caller's retry (`publish`)
sends with the new one. A record the old producer held unacknowledged is failed by
aiokafka and published again by its caller's retry, so none is lost; one it had written
without the answer reaching it may be written twice: the delivery log is read by
webhook-id (`chainwatch deliveries`, the sink's rows), and a repeat says the same outcome.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.aiokafka_private import sender_task, spends_producer
from schemas.kafka_security import Kafka, aiokafka_kwargs
from sinks.producer_start import ProducerStartFailed, start_producer, stop_producer
from sinks.webhooks import metrics

log = structlog.stdlib.get_logger(__name__)


def log_producer(kafka: Kafka) -> AIOKafkaProducer:
    """An aiokafka producer of the delivery log and its dead letters: acknowledged by
    every replica, idempotent."""
    return AIOKafkaProducer(**aiokafka_kwargs(kafka), acks="all", enable_idempotence=True)


class LogProducerUnavailable(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """No producer to send with now (its renewal did not start one): retried as Kafka
    being away is (`publish`)."""


class LogProducer:
    """The notifier's (and `deliveries resend`'s) producer, shared by every endpoint."""

    def __init__(
        self,
        kafka: Kafka,
        stop: asyncio.Event | None = None,
        *,
        start_timeout_s: float | None = None,
    ) -> None:
        self.kafka = kafka
        self.stop_event = stop
        self.start_timeout_s = start_timeout_s
        self.producer = log_producer(kafka)
        self.renewals = 0
        self._renewing = asyncio.Lock()

    async def start(self) -> bool:
        """Start it (bounded, `start_producer`): False when `stop` came first."""
        return await start_producer(
            self.producer, self.kafka, stop=self.stop_event, timeout_s=self.start_timeout_s
        )

    async def stop(self) -> None:
        await stop_producer(self.producer)  # bounded: a stop's deadline counts on it

    async def send_and_wait(self, topic: str, value: bytes | None, key: bytes) -> None:
        producer = self.producer
        if _sender_ended(producer):
            await self._renew(producer, "its sender ended")
            producer = self.producer
        try:
            await producer.send_and_wait(topic, value=value, key=key)
        except KafkaError as exc:
            if spends_producer(exc):
                await self._renew(producer, type(exc).__name__)
            raise  # the caller's retry (`publish`) sends again, with a new producer if spent

    async def _renew(self, spent: AIOKafkaProducer, why: str) -> None:
        async with self._renewing:
            if self.producer is not spent:
                return  # another endpoint's send renewed it meanwhile
            log.warning("log_producer_renewed", why=why, renewals_before=self.renewals)
            metrics.LOG_PRODUCER_RENEWALS.inc()
            await stop_producer(spent)
            fresh = log_producer(self.kafka)
            try:
                started = await start_producer(
                    fresh, self.kafka, stop=self.stop_event, timeout_s=self.start_timeout_s
                )
            except ProducerStartFailed as exc:  # Kafka still away: the retry comes back here
                raise LogProducerUnavailable(str(exc)) from None
            if not started:
                raise LogProducerUnavailable("stopping: no new producer started")
            self.producer = fresh
            self.renewals += 1


def _sender_ended(producer: AIOKafkaProducer) -> bool:
    """Whether the started producer's sender task has ended (nothing it is given is sent)."""
    task = sender_task(producer)
    return task is not None and task.done()
