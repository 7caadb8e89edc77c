"""Every record of a topic whose writers are done, read up to its end offsets.

A consumer with `consumer_timeout_ms` stops only after that long without a record:
each read of a finished topic spent the whole timeout (3 s) after its last record.
Reading up to the end offsets the broker gives when asked ends as soon as the last
record is read; the deadline is only for a broker that stops answering.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from chainwatch.settings import Settings

READ_TIMEOUT_S = 60.0
"""Far beyond a read of a few hundred records on a busy machine."""


def read_to_end(bootstrap: str, topic: str, timeout_s: float = READ_TIMEOUT_S) -> list[bytes]:
    """The values of `topic`'s records (any partition order) up to its end offsets now.

    Transaction markers count: kafka-python's position passes a control batch, so a
    topic written in transactions is read to its end too (read_uncommitted, as a
    consumer without `isolation_level` reads)."""
    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=15_000
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            assert time.monotonic() < deadline, f"no partitions of {topic} within {timeout_s} s"
            time.sleep(0.1)  # poll interval of the condition, not a wait for it
            partitions = consumer.partitions_for_topic(topic)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        values: list[bytes] = []
        while behind := [tp for tp in assigned if consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, (
                f"{topic} not read to its end within {timeout_s} s: behind on {behind}"
            )
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(record.value for record in records)
        return values
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str) -> list[bytes]:
    """`read_to_end` of one of `settings`' topics (`topic` without its prefix)."""
    return read_to_end(settings.kafka.bootstrap, settings.kafka.topic(topic))
