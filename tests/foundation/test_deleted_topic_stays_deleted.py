"""A deleted topic stays deleted when a client asks about it afterwards.

The local broker (deploy/kafka/server.properties, every test broker too) created any
topic a client asked about: kafka-python's and aiokafka's clients ask for a topic's
metadata with `allow_auto_topic_creation` on by default. A deleted run's topic came
back, with the broker's `num.partitions` and not the run's count, when a request about
it was processed after the deletion (a killed worker's last one, queued on a loaded
broker: the killed-member test of test_replay_delete failed 1 run in 5 beside four CPU
hogs). The broker now creates no topic by itself; every process creates the topics it
uses. (Our aiokafka clients no longer ask for creation either, and the kafka-python
client here is made with its defaults, so it still does:
test_no_topic_creation.py checks our clients against a broker that creates topics.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownTopicOrPartitionError
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from chainwatch.kafka_admin import admin_client, create_missing_topics, kafka_call
from chainwatch.settings import Settings

ASK_MS = 5000  # how long each client keeps asking for the deleted topic's metadata


def _listed(bootstrap: str, topic: str) -> bool:
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        return topic in kafka_call(
            admin.list_topics, bootstrap=bootstrap, what="list its topics", timeout_s=20
        )
    finally:
        admin.close()


def _deleted_topic(settings: Settings) -> str:
    """A topic made with 2 partitions (not the broker's 4), deleted, no longer listed."""
    bootstrap, topic = settings.kafka.bootstrap, settings.kafka.topic("gone")
    create_missing_topics(bootstrap, {topic: {}}, request_timeout_s=15, partitions=2)
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        kafka_call(
            lambda: admin.delete_topics([topic]),
            bootstrap=bootstrap,
            what="delete it",
            timeout_s=20,
        )
    finally:
        admin.close()
    deadline = time.monotonic() + 60
    while _listed(bootstrap, topic):
        assert time.monotonic() < deadline, f"{topic} still listed 60 s after its deletion"
        time.sleep(0.1)  # poll interval of the listing
    return topic


def test_a_kafka_python_client_asking_for_a_deleted_topic_does_not_bring_it_back(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    topic = _deleted_topic(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, max_block_ms=ASK_MS)
    try:
        try:  # it asks again and again for ASK_MS, with its defaults
            came_back: set[int] | None = producer.partitions_for(topic)
        except KafkaTimeoutError:
            came_back = None
    finally:
        producer.close(timeout=5)
    assert came_back is None  # the broker's 4 partitions, not the topic's 2, when it came back
    assert not _listed(settings.kafka.bootstrap, topic)


def test_an_aiokafka_client_asking_for_a_deleted_topic_does_not_bring_it_back(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    topic = _deleted_topic(settings)

    async def ask() -> set[int] | None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap, request_timeout_ms=ASK_MS
        )
        await asyncio.wait_for(producer.start(), timeout=30)
        try:  # faust's client, as every process has it: it asks again and again for ASK_MS
            partitions: set[int] = await asyncio.wait_for(producer.partitions_for(topic), 30)
            return partitions
        except UnknownTopicOrPartitionError:
            return None
        finally:
            await asyncio.wait_for(producer.stop(), timeout=30)

    assert asyncio.run(ask()) is None
    assert not _listed(settings.kafka.bootstrap, topic)
