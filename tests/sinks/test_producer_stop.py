"""A producer's stop cut short still closes its connections (sinks/producer_start.py).

aiokafka's `stop` flushes the records it holds before it closes its client, and marks
the producer closed as it begins: a stop past `stop_producer`'s deadline (records
Kafka does not take) or cancelled left the client's connections open for the life of
the process, never closed (the garbage collector's "Unclosed AIOKafkaConnection").
Here a real producer of the suite's broker holds a flush that never ends.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.conn import AIOKafkaConnection
from kafka_connections import held_connections

from sinks.producer_start import stop_producer

WAIT_S = 30.0
"""What a test waits at most before it fails instead of hanging."""


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[AIOKafkaConnection]:
    """Every connection an aiokafka client opens, held here."""
    return held_connections(monkeypatch)


async def _started_never_flushing(bootstrap: str) -> tuple[AIOKafkaProducer, asyncio.Event]:
    """A started idempotent producer (a connection to a broker kept for its producer id)
    whose stop waits for ever for its records to be taken, and the event set once it
    waits so."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await asyncio.wait_for(producer.start(), WAIT_S)
    flushing, never = asyncio.Event(), asyncio.Event()

    async def flush() -> None:
        flushing.set()
        await never.wait()

    producer._message_accumulator.close = flush
    return producer, flushing


@pytest.mark.integration
def test_a_stop_past_its_deadline_closes_the_producers_connections(
    kafka_bootstrap: str, opened: list[AIOKafkaConnection]
) -> None:
    async def run() -> None:
        producer, _ = await _started_never_flushing(kafka_bootstrap)
        assert [conn for conn in opened if conn.connected()]
        await asyncio.wait_for(stop_producer(producer, timeout_s=0.2), WAIT_S)

    asyncio.run(run())
    assert [conn for conn in opened if conn.connected()] == []


@pytest.mark.integration
def test_a_cancelled_stop_closes_the_producers_connections(
    kafka_bootstrap: str, opened: list[AIOKafkaConnection]
) -> None:
    async def run() -> None:
        producer, flushing = await _started_never_flushing(kafka_bootstrap)
        assert [conn for conn in opened if conn.connected()]
        stopping = asyncio.ensure_future(stop_producer(producer, timeout_s=WAIT_S))
        await asyncio.wait_for(flushing.wait(), WAIT_S)
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping

    asyncio.run(run())
    assert [conn for conn in opened if conn.connected()] == []
