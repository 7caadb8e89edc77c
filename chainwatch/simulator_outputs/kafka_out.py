"""Publishing simulated records to the input topics of a Kafka cluster.

kafka-python's producer with `acks=all`: a record counts as published once
every in-sync replica has it. Keys follow CONTRACT.md (order_id for orders
and scans, unit_id for unit status, customer_id for the CRM), so one order's
records stay in one partition, in order. Sends are asynchronous; `close`
flushes, and a failed send is counted (and logged) rather than retried
forever: the simulator is a load source, not a system of record. The producer
starts through `kafka_start.started` (a start that fails leaves no socket or
thread behind) and is closed with a deadline whatever happens.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from chainwatch.kafka_admin import (
    UNREACHABLE_HINT,
    KafkaUnreachable,
    connected,
    ensure_topics,
    kafka_call,
)
from chainwatch.kafka_start import started
from chainwatch.logs import get_logger
from chainwatch.settings import Settings
from simulator.records import SimRecord
from streams.topics import INPUT_TOPICS, TopicNames

log = get_logger(__name__)

FLUSH_TIMEOUT_S = 60.0
"""How long `close` waits for Kafka to acknowledge what was sent (then a one-line error)."""
CLOSE_TIMEOUT_S = 30.0
SEND_BLOCK_MS = 60_000
"""How long a send may wait for the topic's metadata or room in the buffer (kafka-python's
default, then its bare KafkaTimeoutError, now ours in one line)."""


class KafkaPublisher:
    """Sends each record to `<prefix><topic>`; creates missing input topics first."""

    def __init__(self, settings: Settings, *, create_topics: bool = True) -> None:
        kafka = settings.kafka
        self.bootstrap = kafka.bootstrap
        self.names = TopicNames(kafka.topic_prefix)
        if create_topics:
            ensure_topics(
                kafka.endpoint,
                self.names,
                INPUT_TOPICS,
                request_timeout_s=kafka.request_timeout_s,
                partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs=kafka.topic_configs(),
            )
        self._producer: KafkaProducer = connected(
            lambda start_ms: started(
                KafkaProducer,
                kafka.endpoint,
                start_ms=start_ms,
                acks="all",
                enable_idempotence=True,  # a retried send must not duplicate a record
                linger_ms=20,
                retries=5,
                max_in_flight_requests_per_connection=1,
                max_block_ms=SEND_BLOCK_MS,
            ),
            kafka.endpoint,
            close=lambda producer: producer.close(timeout=CLOSE_TIMEOUT_S),
            request_timeout_s=kafka.request_timeout_s,
        )
        self.failed = 0
        self._closed = False

    def _failed(self, exc: Any) -> None:
        self.failed += 1
        if self.failed <= 5:
            log.warning("simulate.publish_failed", error=type(exc).__name__, detail=str(exc))

    def send(self, record: SimRecord) -> None:
        try:
            future = self._producer.send(
                self.names(record.topic), key=record.key_bytes(), value=record.value_bytes()
            )
        except KafkaTimeoutError:
            raise KafkaUnreachable(
                f"Kafka at {self.bootstrap} did not take a record within "
                f"{SEND_BLOCK_MS / 1000:g} s (no metadata of its topic, or no room to hold "
                f"it); {UNREACHABLE_HINT}"
            ) from None
        future.add_errback(self._failed)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            kafka_call(  # kafka-python's flush raised its bare KafkaTimeoutError
                lambda: self._producer.flush(timeout=FLUSH_TIMEOUT_S),
                bootstrap=self.bootstrap,
                what=f"acknowledge the records sent within {FLUSH_TIMEOUT_S:g} s",
                timeout_s=FLUSH_TIMEOUT_S + 5,
            )
        finally:
            self._producer.close(timeout=CLOSE_TIMEOUT_S)
