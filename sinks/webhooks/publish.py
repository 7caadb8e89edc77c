"""Publishing the notifier's log records: `webhook-deliveries` and `webhook-dead-letter`.

A delivery's outcome is recorded before its offset may be committed (notifier.py),
so a record Kafka cannot take now is retried until it can; one it will never
take (too large: records.py bounds them, so a bug) is logged and counted rather
than retried for ever.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from sinks.backoff import Backoff
from sinks.webhooks import metrics
from sinks.webhooks.log_producer import LogProducer

log = structlog.stdlib.get_logger(__name__)

PERMANENT_PUBLISH_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)
"""The broker will never take this record: retrying cannot help."""


async def publish(producer: LogProducer, topic: str, key: str | bytes, value: bytes | None) -> bool:
    """Publish one log record, retrying while Kafka is unavailable (each try bounded by
    the producer's `request_timeout_ms`; a producer whose sender ended is renewed,
    log_producer.py); False, logged and counted, for a record the
    broker refuses for good (records are bounded, so this is a bug, never a loop)."""
    backoff = Backoff(0.2, 10.0)
    while True:
        try:
            raw = key if isinstance(key, bytes) else key.encode()
            await producer.send_and_wait(topic, value=value, key=raw)
            return True
        except PERMANENT_PUBLISH_ERRORS as exc:
            size = len(value or b"")
            log.error("publish_refused", topic=topic, bytes=size, error=type(exc).__name__)
            metrics.LOG_REFUSED.labels(topic).inc()
            return False
        except KafkaError as exc:
            log.warning("publish_failed", topic=topic, error=type(exc).__name__)
            await asyncio.sleep(backoff.next())
