"""`chainwatch notify`: alerts topic → per-endpoint queues → signed HTTP deliveries.

Lifecycle and guarantees:
- One Kafka consumer reads `alerts`; each record is matched against every
  endpoint's filters and queued on the endpoints it matches. Each endpoint has
  its own bounded queue, HTTP client and worker tasks, so a slow or dead
  endpoint never delays another one, nor the consumer.
- A delivery ends `delivered` or `gave_up` (4xx, retry horizon passed, or the
  endpoint's queue full); both publish a `DeliveryLog` (→ ClickHouse through
  the sink), and giving up also publishes a `WebhookDeadLetter`.
- Offsets are committed only below the lowest record with a pending delivery
  (`OffsetTracker`): at-least-once per endpoint; receivers de-duplicate with the
  `webhook-id`, one per distinct message (payloads.py).
- Secrets and full URLs (which may embed tokens) are never logged: logs name the
  endpoint and its host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from pydantic import ValidationError
from standardwebhooks import Webhook

from chainwatch.logs import get_logger
from schemas.alerts import Alert
from sinks.webhooks import metrics
from sinks.webhooks.delivery import (
    AttemptResult,
    DeliveryResult,
    RetryPolicy,
    deliver,
    http_client,
)
from sinks.webhooks.offsets import OffsetTracker
from sinks.webhooks.payloads import MessageIds, render
from sinks.webhooks.records import DeliveryLog, WebhookDeadLetter
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import TargetPolicy

log = get_logger(__name__)


@dataclass(frozen=True)
class Job:
    alert: Alert
    msg_id: str
    tp: TopicPartition
    offset: int


@dataclass
class NotifyStats:
    alerts: int = 0
    invalid: int = 0
    delivered: int = 0
    gave_up: int = 0


@dataclass(frozen=True)
class Topics:
    alerts: str
    deliveries: str
    dead_letter: str


def _status_class(result: AttemptResult) -> str:
    return "error" if result.status == 0 else f"{result.status // 100}xx"


PERMANENT_PUBLISH_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)
"""The broker will never take this record: retrying cannot help."""


async def publish(producer: AIOKafkaProducer, topic: str, key: str, value: bytes) -> bool:
    """Publish one log record, retrying while Kafka is unavailable (each try bounded by
    the producer's `request_timeout_ms`); False, logged and counted, for a record the
    broker refuses for good (records are bounded, so this is a bug, never a loop)."""
    delay = 0.2
    while True:
        try:
            await producer.send_and_wait(topic, value=value, key=key.encode())
            return True
        except PERMANENT_PUBLISH_ERRORS as exc:
            log.error("publish_refused", topic=topic, bytes=len(value), error=type(exc).__name__)
            metrics.LOG_REFUSED.labels(topic).inc()
            return False
        except KafkaError as exc:
            log.warning("publish_failed", topic=topic, error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


class EndpointWorker:
    """The queue, HTTP client and workers of one endpoint."""

    def __init__(
        self, endpoint: Endpoint, policy: RetryPolicy, queue_size: int, targets: TargetPolicy
    ) -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self.signer = Webhook(endpoint.signing_secret())
        self.http = http_client(policy, targets=targets, concurrency=endpoint.concurrency)
        self.in_flight = 0

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or not self.queue.empty()

    async def deliver(self, job: Job) -> tuple[DeliveryResult, dict[str, Any], str]:
        payload, body = render(job.alert, self.endpoint.format)
        msg_id = job.msg_id
        name = self.endpoint.name

        def count(result: AttemptResult) -> None:
            metrics.ATTEMPTS.labels(name, _status_class(result)).inc()

        result = await deliver(
            self.http,
            self.endpoint.url.get_secret_value(),
            self.signer,
            msg_id,
            body,
            self.policy,
            on_attempt=count,
        )
        return result, payload, msg_id


class Notifier:
    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Topics,
        endpoints: Sequence[Endpoint],
        policy: RetryPolicy,
        targets: TargetPolicy,
        queue_size: int = 10_000,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = topics
        self.workers = [EndpointWorker(e, policy, queue_size, targets) for e in endpoints]
        self.consumer_options = dict(consumer_options or {})
        self.tracker = OffsetTracker()
        self.ids = MessageIds()
        self.stats = NotifyStats()
        self._producer: AIOKafkaProducer | None = None

    # --- outcomes ------------------------------------------------------------

    async def _publish(self, topic: str, key: str, value: bytes) -> None:
        assert self._producer is not None
        await publish(self._producer, topic, key, value)

    async def _finish(
        self,
        worker: EndpointWorker,
        job: Job,
        result: DeliveryResult,
        payload: dict[str, Any],
        msg_id: str,
    ) -> None:
        endpoint = worker.endpoint
        outcome = "delivered" if result.delivered else "gave_up"
        entry = DeliveryLog(
            webhook_id=msg_id,
            alert_id=job.alert.alert_id,
            alert_status=job.alert.status.value,
            alert_type=job.alert.type.value,
            endpoint=endpoint.name,
            url_host=endpoint.host,
            outcome=outcome,
            attempts=result.attempts,
            status_codes=result.status_codes,
            last_error=result.last_error,
            first_attempt_at=result.first_attempt_at,
            finished_at=result.finished_at,
            latency_ms=result.latency_ms,
        )
        await self._publish(self.topics.deliveries, msg_id, entry.model_dump_json().encode())
        if not result.delivered:
            letter = WebhookDeadLetter(
                dead_letter_id=WebhookDeadLetter.id_for(msg_id, endpoint.name),
                webhook_id=msg_id,
                endpoint=endpoint.name,
                url_host=endpoint.host,
                alert_id=job.alert.alert_id,
                reason=result.last_error,
                attempts=result.attempts,
                status_codes=result.status_codes,
                payload=payload,
                failed_at=result.finished_at,
            )
            await self._publish(self.topics.dead_letter, msg_id, letter.model_dump_json().encode())
            self.stats.gave_up += 1
            log.warning(
                "webhook_gave_up",
                endpoint=endpoint.name,
                host=endpoint.host,
                webhook_id=msg_id,
                attempts=result.attempts,
                error=result.last_error,
            )
        else:
            self.stats.delivered += 1
        metrics.DELIVERIES.labels(endpoint.name, outcome).inc()
        metrics.LATENCY.labels(endpoint.name).observe(result.latency_ms / 1000)
        self.tracker.done(job.tp, job.offset)

    async def _work(self, worker: EndpointWorker) -> None:
        while True:
            job = await worker.queue.get()
            worker.in_flight += 1
            metrics.QUEUE_DEPTH.labels(worker.endpoint.name).set(worker.queue.qsize())
            try:
                result, payload, msg_id = await worker.deliver(job)
                await self._finish(worker, job, result, payload, msg_id)
            finally:
                worker.in_flight -= 1

    async def _dispatch(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        self.stats.alerts += 1
        try:
            alert = Alert.model_validate_json(value or b"")
        except ValidationError:
            self.stats.invalid += 1
            metrics.INVALID_ALERTS.inc()
            self.tracker.consumed(tp, offset, 0)
            return
        matched = [w for w in self.workers if w.endpoint.filters.matches(alert)]
        self.tracker.consumed(tp, offset, len(matched))
        job = Job(alert, self.ids.id_for(alert, tp.partition, offset), tp, offset)
        for worker in matched:
            try:
                worker.queue.put_nowait(job)
            except asyncio.QueueFull:
                now = datetime.now(UTC)
                full = DeliveryResult(
                    delivered=False,
                    last_error="endpoint queue full",
                    first_attempt_at=now,
                    finished_at=now,
                )
                payload, _ = render(alert, worker.endpoint.format)
                await self._finish(worker, job, full, payload, job.msg_id)
            metrics.QUEUE_DEPTH.labels(worker.endpoint.name).set(worker.queue.qsize())

    # --- main loop -----------------------------------------------------------

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets = {
            tp: off for tp, off in self.tracker.committable().items() if tp in consumer.assignment()
        }
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:
                log.warning("commit_failed", error=type(exc).__name__)

    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> NotifyStats:
        """Deliver until `stop` (or, with `drain`, until caught up and every queue is empty)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **self.consumer_options,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        consumer.subscribe([self.topics.alerts], listener=_Revoke(self, consumer))
        await self._producer.start()
        await consumer.start()
        tasks = [
            asyncio.create_task(self._work(worker), name=f"webhook-{worker.endpoint.name}-{i}")
            for worker in self.workers
            for i in range(worker.endpoint.concurrency)
        ]
        try:
            await self._loop(consumer, stop, drain)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._commit(consumer)
            await consumer.stop()
            await self._producer.stop()
            for worker in self.workers:
                await worker.http.aclose()
        return self.stats

    async def _loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event, drain: bool) -> None:
        targets: dict[TopicPartition, int] | None = None
        last_commit = time.monotonic()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=1000)
            for tp, records in batch.items():
                for record in records:
                    await self._dispatch(tp, record.offset, record.value)
            if time.monotonic() - last_commit >= 0.5:
                await self._commit(consumer)
                last_commit = time.monotonic()
            if drain:
                assigned = consumer.assignment()
                if not assigned:
                    continue
                if targets is None or set(targets) != assigned:
                    targets = await consumer.end_offsets(list(assigned))
                if (
                    all([await consumer.position(tp) >= end for tp, end in targets.items()])
                    and self.tracker.idle()
                    and not any(w.busy for w in self.workers)
                ):
                    return


class _Revoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, notifier: Notifier, consumer: AIOKafkaConsumer) -> None:
        self.notifier = notifier
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        with contextlib.suppress(KafkaError):
            await self.notifier._commit(self.consumer)
        for tp in revoked:
            self.notifier.tracker.forget(tp)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None
