"""A Kafka client whose start is cut short while it bootstraps leaves no connection open
(chainwatch.kafka_bootstrap_close).

aiokafka's bootstrap left the connection it asks the cluster's metadata on open and
known to no one when a cancel came during that request: a stop during a consumer's or
a producer's start, a revocation during the notifier's warm-up. The garbage collector
found them later, in whatever test then ran ("Unclosed AIOKafkaConnection", then its
socket, as unraisable warnings of a loaded suite run). Here the broker answers the
version handshake and never the metadata request, so each start is cut exactly there;
every connection the client opened is held by the test (none is collected, which
would close it behind the client's back) and must be closed once the start is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.conn import AIOKafkaConnection
from dead_servers import MetadataNeverAnswered
from kafka_connections import held_connections

from sinks.consumer import new_consumer, start_consumer
from sinks.producer_start import start_producer
from sinks.webhooks.warmup import WarmupConfig, read_back

WAIT_S = 30.0
"""For a loopback answer: far past it on a loaded machine."""


@pytest.fixture
def broker() -> Iterator[MetadataNeverAnswered]:
    server = MetadataNeverAnswered()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[AIOKafkaConnection]:
    """Every connection an aiokafka client opens, held here."""
    return held_connections(monkeypatch)


async def _consumer_stopped(bootstrap: str, stop: asyncio.Event) -> object:
    consumer = new_consumer(bootstrap, "cw-test")
    return await start_consumer(consumer, stop)  # stops the consumer when `stop` comes first


async def _producer_stopped(bootstrap: str, stop: asyncio.Event) -> object:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    return await start_producer(producer, bootstrap, stop=stop)


async def _warmup_revoked(bootstrap: str, stop: asyncio.Event) -> object:
    """The notifier's read-back, cancelled as a revocation does (`Warmup.stop`)."""

    async def position(_tp: TopicPartition) -> int:
        return 10

    reading = asyncio.ensure_future(
        read_back(
            [TopicPartition("cw.alerts", 0)],
            position,
            WarmupConfig(records=100, timeout_s=WAIT_S),
            lambda *_: None,
            lambda _: None,
            bootstrap=bootstrap,
        )
    )
    await stop.wait()
    reading.cancel()
    (outcome,) = await asyncio.gather(reading, return_exceptions=True)
    return type(outcome).__name__


Start = Callable[[str, asyncio.Event], Awaitable[object]]


@pytest.mark.parametrize(
    ("start", "outcome"),
    [(_consumer_stopped, False), (_producer_stopped, False), (_warmup_revoked, "CancelledError")],
    ids=["consumer-stopped", "producer-stopped", "warmup-revoked"],
)
def test_a_start_cut_while_it_asks_for_the_metadata_closes_its_connection(
    broker: MetadataNeverAnswered, opened: list[AIOKafkaConnection], start: Start, outcome: object
) -> None:
    async def run() -> object:
        stop = asyncio.Event()
        starting = asyncio.ensure_future(start(broker.bootstrap, stop))
        assert await asyncio.to_thread(broker.asked.wait, WAIT_S)
        stop.set()
        return await starting

    assert asyncio.run(run()) == outcome
    assert opened  # the bootstrap's
    assert [conn for conn in opened if conn.connected()] == []
    assert broker.dropped.wait(WAIT_S)  # the broker sees the connection go
