"""No client of ours makes Kafka create a topic by asking for its metadata.

A Metadata request that names a topic may ask the broker to create it, and a broker with
`auto.create.topics.enable=true` (Kafka's default; ours have it off, a user's may not)
does, with its own partition count: a deleted run's topic came back so
(docs/reliability.md). aiokafka's clients (faust's included) and kafka-python's asked
for it (`chainwatch.no_topic_creation`). Here the session's second broker
(`creating_broker`, conftest.py), with the setting on, is asked for absent topics for a
few seconds by each client built as the project builds it, all at once; none of those
topics is created, where a kafka-python client with its defaults gets its own created.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiokafka.client
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError
from aiokafka.protocol.metadata import MetadataResponse_v0
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from chainwatch.kafka_admin import admin_client, bounded, kafka_call
from chainwatch.kafka_start import started
from chainwatch.no_topic_creation import (
    MetadataRequestWithoutCreation,
    forbid_aiokafka_topic_creation,
)
from sinks.consumer import new_consumer
from streams.app import create_app

ASK_S = 1.5
"""How long each client keeps asking for its absent topic (it asks every ~0.1 s). A client
asks at once, so 3 s only made the test wait: at 1.5 s a Metadata request that allows
creation still gets the three aiokafka clients' topics created, and a kafka-python option
that allows it the producer's and the consumer's."""
CREATED_WITHIN_S = 30.0
"""How long the broker may take to list a topic a client made it create."""


def _listed(bootstrap: str) -> set[str]:
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        return set(
            kafka_call(admin.list_topics, bootstrap=bootstrap, what="list its topics", timeout_s=20)
        )
    finally:
        admin.close()


# --- kafka-python, asking from a thread each ----------------------------------------


def _kafka_python_producer(bootstrap: str, topic: str) -> None:
    """The simulator's and the sink bench's way (`started`), its send waiting for metadata."""
    producer = started(KafkaProducer, bootstrap, start_ms=10_000, max_block_ms=int(ASK_S * 1000))
    try:
        with contextlib.suppress(KafkaTimeoutError):  # no such topic for ASK_S
            producer.partitions_for(topic)
    finally:
        producer.close(timeout=5)


def _kafka_python_consumer(bootstrap: str, topic: str) -> None:
    """The fault bench's way (`started`), subscribed to the topic for ASK_S."""
    consumer = started(KafkaConsumer, bootstrap, start_ms=10_000, group_id=topic)
    try:
        consumer.subscribe([topic])
        until = time.monotonic() + ASK_S
        while time.monotonic() < until:
            consumer.poll(timeout_ms=100)
    finally:
        consumer.close(timeout_ms=5000)


def _kafka_python_admin(bootstrap: str, topic: str) -> None:
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        kafka_call(
            lambda: admin.describe_topics([topic]),
            bootstrap=bootstrap,
            what="describe",
            timeout_s=20,
        )
    finally:
        admin.close()


def _kafka_python_defaults(bootstrap: str, topic: str) -> None:
    """The control: a kafka-python producer made with its defaults asks for creation."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_block_ms=int(ASK_S * 1000))
    try:
        with contextlib.suppress(KafkaTimeoutError):
            producer.partitions_for(topic)
    finally:
        producer.close(timeout=5)


# --- aiokafka, asking on one event loop ---------------------------------------------


async def _aiokafka_producer(bootstrap: str, topic: str) -> None:
    """A producer as the replay, the gateway's publisher and the notifier make theirs."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=int(ASK_S * 1000))
    await asyncio.wait_for(producer.start(), timeout=30)
    try:
        with contextlib.suppress(UnknownTopicOrPartitionError):  # after ASK_S
            await asyncio.wait_for(producer.partitions_for(topic), timeout=30)
    finally:
        await asyncio.wait_for(producer.stop(), timeout=30)


async def _aiokafka_consumer(bootstrap: str, topic: str) -> None:
    """The sinks' consumer (`sinks.consumer.new_consumer`), subscribed to the topic."""
    consumer = new_consumer(bootstrap, None)
    await asyncio.wait_for(consumer.start(), timeout=30)
    try:
        consumer.subscribe([topic])
        await consumer.getmany(timeout_ms=int(ASK_S * 1000))
    finally:
        await asyncio.wait_for(consumer.stop(), timeout=30)


async def _faust_producer(bootstrap: str, topic: str, data_dir: Path) -> None:
    """The engine's producer (faust's, through `streams.kafka_transport`), waiting for
    the topic's partitions before a batched send."""
    app = create_app(
        f"t{uuid.uuid4().hex[:8]}", bootstrap=bootstrap, partitions=1, data_dir=data_dir
    )
    producer = app.producer
    await asyncio.wait_for(producer.start(), timeout=30)
    try:
        with contextlib.suppress(TimeoutError):  # faust gives its requests 20 minutes
            await asyncio.wait_for(producer.key_partitioner(topic), timeout=ASK_S)  # type: ignore[attr-defined]
    finally:
        await asyncio.wait_for(producer.stop(), timeout=30)


@pytest.mark.integration  # the session's second broker, not the suite's `kafka_bootstrap`
def test_no_client_of_ours_makes_a_broker_create_a_topic_it_asks_about(
    creating_broker: str, tmp_path: Path
) -> None:
    bootstrap, run = creating_broker, f"t{uuid.uuid4().hex[:8]}"
    threaded: dict[str, Callable[[str, str], None]] = {
        "kafka-python producer": _kafka_python_producer,
        "kafka-python consumer": _kafka_python_consumer,
        "kafka-python admin": _kafka_python_admin,
    }
    topic = {
        name: f"{run}.{name.replace(' ', '-')}"
        for name in (*threaded, "aiokafka producer", "aiokafka consumer", "faust producer")
    }
    control = f"{run}.defaults"

    async def ask_from_aiokafka() -> None:
        await asyncio.gather(
            _aiokafka_producer(bootstrap, topic["aiokafka producer"]),
            _aiokafka_consumer(bootstrap, topic["aiokafka consumer"]),
            _faust_producer(bootstrap, topic["faust producer"], tmp_path),
        )

    with ThreadPoolExecutor(max_workers=len(threaded) + 1) as pool:
        asked = [pool.submit(ask, bootstrap, topic[name]) for name, ask in threaded.items()]
        asked.append(pool.submit(_kafka_python_defaults, bootstrap, control))
        asyncio.run(ask_from_aiokafka())
        for each in asked:
            each.result(timeout=60)

    deadline = time.monotonic() + CREATED_WITHIN_S
    while control not in (listed := _listed(bootstrap)):  # the broker does create topics
        assert time.monotonic() < deadline, f"{control} not created within {CREATED_WITHIN_S} s"
        time.sleep(0.1)  # poll interval of the listing
    created = sorted(name for name, each in topic.items() if each in listed)
    assert created == [], f"these clients made the broker create their topic: {created}"


def test_aiokafka_s_client_builds_its_metadata_request_through_the_name_we_rebind() -> None:
    """Without a broker (`make check` runs it): aiokafka's own metadata update sends a
    request that asks for no creation at every version that has the flag. Fails when
    aiokafka builds the request elsewhere than through `aiokafka.client.MetadataRequest`."""
    assert aiokafka.client.MetadataRequest is MetadataRequestWithoutCreation  # by `chainwatch`
    forbid_aiokafka_topic_creation()  # again: idempotent
    assert aiokafka.client.MetadataRequest is MetadataRequestWithoutCreation
    sent: list[object] = []

    class Recording:
        async def send(self, request: object) -> object:
            sent.append(request)
            raise KafkaError("recorded, not sent")

    async def update() -> None:
        client = aiokafka.client.AIOKafkaClient(bootstrap_servers="127.0.0.1:9")
        client.cluster.update_metadata(MetadataResponse_v0([(0, "127.0.0.1", 9)], []))

        async def recording_conn(*args: object, **kwargs: object) -> Recording:
            return Recording()

        client._get_conn = recording_conn
        await client._metadata_update(ClusterMetadata(), {"absent"})

    bounded(lambda: asyncio.run(update()), timeout_s=30, what="a metadata update")
    (request,) = sent
    for version in (4, 5):
        struct = request.prepare({3: (version, version)})  # type: ignore[attr-defined]
        assert (struct.topics, struct.allow_auto_topic_creation) == (["absent"], False)
