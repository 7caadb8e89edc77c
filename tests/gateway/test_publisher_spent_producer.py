"""The gateway's publisher after the broker refused a slot producer's batch numbering.

An idempotent producer numbers its batches per partition; after a broker restart with a
batch in flight the broker may refuse the numbering (OUT_OF_ORDER_SEQUENCE_NUMBER), and
aiokafka keeps it, so every later batch of that producer to the partition is refused the
same (the notifier wedged so: tests/sinks/test_webhook_log_producer.py). Here the broker
is made to give that answer by the slot producer's own sequence moved ahead, on the real
broker: the request in flight is answered 503 (nothing of it committed), the slot gets a
new producer (`_discard`: a new epoch of its transactional id, its numbering from 0), and
the next request is published."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from gateway_harness import read_committed

from streams.ingest.publisher import PublisherConfig, PublishUnavailable, TransactionalPublisher
from streams.ingest.records import OutRecord

pytestmark = pytest.mark.integration


def _topic(kafka_bootstrap: str) -> str:
    async def create() -> str:
        name = f"spent-{uuid.uuid4().hex[:8]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 1)])
        finally:
            await admin.close()
        return name

    return asyncio.run(create())


def test_a_slot_whose_numbering_is_refused_answers_503_once_then_publishes_again(
    kafka_bootstrap: str,
) -> None:
    topic = _topic(kafka_bootstrap)
    publisher = TransactionalPublisher(
        PublisherConfig(kafka_bootstrap, f"t-{topic}", pool_size=1, publish_timeout_s=10.0)
    )

    async def run() -> tuple[object, object, BaseException | None]:
        await publisher.start()
        try:
            await publisher.publish([OutRecord(topic, b"k", b"before")])
            spent = publisher._producers[0]
            assert spent is not None
            sequences = spent._txn_manager._sequence_numbers
            assert sequences, "the producer numbered no batch"
            for tp in list(sequences):  # the broker now expects an earlier sequence
                sequences[tp] += 7
            refused: BaseException | None = None
            try:
                await publisher.publish([OutRecord(topic, b"k", b"refused")])
            except PublishUnavailable as exc:
                refused = exc
            await publisher.publish([OutRecord(topic, b"k", b"after")])
            await publisher.publish([OutRecord(topic, b"k", b"and on")])
            return spent, publisher._producers[0], refused
        finally:
            await publisher.stop()

    spent, now, refused = asyncio.run(asyncio.wait_for(run(), 60))
    assert isinstance(refused, PublishUnavailable), refused
    assert "OutOfOrderSequenceNumber" in str(refused)
    assert not refused.outcome_unknown  # refused before its commit: nothing of it committed
    assert now is not None
    assert now is not spent
    values = [value for _, value in read_committed(kafka_bootstrap, topic)]
    assert values == [b"before", b"after", b"and on"]
