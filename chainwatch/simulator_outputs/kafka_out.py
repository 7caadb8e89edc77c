"""Publishing simulated records to the input topics of a Kafka cluster.

kafka-python's producer with `acks=all`: a record counts as published once
every in-sync replica has it. Keys follow CONTRACT.md (order_id for orders
and scans, unit_id for unit status, customer_id for the CRM), so one order's
records stay in one partition, in order. Sends are asynchronous; `close`
flushes, and a failed send is counted (and logged) rather than retried
forever: the simulator is a load source, not a system of record.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer

from chainwatch.kafka_admin import ensure_topics, kafka_call
from chainwatch.logs import get_logger
from chainwatch.settings import Settings
from simulator.records import SimRecord
from streams.topics import INPUT_TOPICS, TopicNames

log = get_logger(__name__)

FLUSH_TIMEOUT_S = 60.0
"""How long `close` waits for Kafka to acknowledge what was sent (then a one-line error)."""
CLOSE_TIMEOUT_S = 30.0


class KafkaPublisher:
    """Sends each record to `<prefix><topic>`; creates missing input topics first."""

    def __init__(self, settings: Settings, *, create_topics: bool = True) -> None:
        kafka = settings.kafka
        self.bootstrap = kafka.bootstrap
        self.names = TopicNames(kafka.topic_prefix)
        if create_topics:
            ensure_topics(
                kafka.bootstrap,
                self.names,
                INPUT_TOPICS,
                partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs=kafka.topic_configs(),
            )
        self._producer = KafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            acks="all",
            enable_idempotence=True,  # a retried send must not duplicate a record
            linger_ms=20,
            retries=5,
            max_in_flight_requests_per_connection=1,
        )
        self.failed = 0
        self._closed = False

    def _failed(self, exc: Any) -> None:
        self.failed += 1
        if self.failed <= 5:
            log.warning("simulate.publish_failed", error=type(exc).__name__, detail=str(exc))

    def send(self, record: SimRecord) -> None:
        future = self._producer.send(
            self.names(record.topic), key=record.key_bytes(), value=record.value_bytes()
        )
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
