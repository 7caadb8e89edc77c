"""The notifier's log producer after the broker refused its batch numbering.

A broker restart with a delivery-log record in flight made the broker refuse the
idempotent producer's next batch with OUT_OF_ORDER_SEQUENCE_NUMBER: aiokafka fails that
batch but keeps its numbering, so every later batch was refused the same, `publish`
retried for ever and the notifier delivered nothing more while it said it was ready.
Here the broker is made to give that answer by the producer's own sequence moved ahead
(what the broker's lost state looks like from the producer's side), on the real broker:
the producer is renewed once, and the records go on, none lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sink_harness import prepare_all_topics
from topic_to_end import read_topic

from chainwatch.settings import Settings
from sinks.webhooks import metrics
from sinks.webhooks.log_producer import LogProducer
from sinks.webhooks.publish import publish
from sinks.webhooks.records import DELIVERIES_TOPIC

pytestmark = [pytest.mark.integration]


def test_a_producer_whose_sender_ended_is_renewed_and_the_record_published(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)
    topic = settings.kafka.topic(DELIVERIES_TOPIC)
    renewals = metrics.LOG_PRODUCER_RENEWALS._value.get()

    async def run() -> tuple[object, object]:
        producer = LogProducer(settings.kafka.endpoint, asyncio.Event())
        assert await producer.start()
        try:
            assert await publish(producer, topic, "w1", b"before")
            first = producer.producer
            sequences = first._txn_manager._sequence_numbers
            for tp in list(sequences):  # the broker now expects an earlier sequence
                sequences[tp] += 7
            assert await publish(producer, topic, "w1", b"after")
            assert await publish(producer, topic, "w1", b"and on")
            return first, producer.producer
        finally:
            await producer.stop()

    first, now = asyncio.run(asyncio.wait_for(run(), 60))
    assert now is not first
    assert metrics.LOG_PRODUCER_RENEWALS._value.get() == renewals + 1
    assert read_topic(settings, DELIVERIES_TOPIC) == [b"before", b"after", b"and on"]
