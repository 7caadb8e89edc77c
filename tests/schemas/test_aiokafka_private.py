"""`schemas.aiokafka_private`: the producer's sender task is found where the installed
aiokafka keeps it (`_sender.sender_task`), so the cut stops cancel the real sender.

Were it moved by an upgrade, the accessor would give None and the stops would wait on
aiokafka's own unbounded close again: this test fails instead.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from schemas.aiokafka_private import sender_task


def test_the_sender_task_is_read_where_aiokafka_keeps_it() -> None:
    async def run() -> tuple[bool, bool]:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # never started
        before = sender_task(producer)
        sending = asyncio.create_task(asyncio.Event().wait())
        producer._sender._sender_task = sending  # as `Sender.start` sets it
        found = sender_task(producer)
        sending.cancel()
        await asyncio.wait({sending})
        await producer.stop()
        return before is None, found is sending

    assert asyncio.run(run()) == (True, True)


def test_only_a_refused_numbering_or_a_fenced_id_spends_a_producer() -> None:
    from aiokafka.errors import (
        KafkaTimeoutError,
        NotLeaderForPartitionError,
        OutOfOrderSequenceNumber,
        ProducerFenced,
    )

    from schemas.aiokafka_private import spends_producer

    assert spends_producer(OutOfOrderSequenceNumber())
    assert spends_producer(ProducerFenced())
    assert not spends_producer(KafkaTimeoutError())  # Kafka away: the same producer retries
    assert not spends_producer(NotLeaderForPartitionError())


def test_unsent_batches_and_their_records_futures_are_cancelled_where_aiokafka_keeps_them() -> None:
    """`drop_unsent` reads the accumulator's queued and drained batches, a batch's future
    and its records' futures: were one moved by an upgrade, a cut stop's close would wait
    for them for good again (tests/sinks/test_producer_stop_frozen_broker.py)."""
    from aiokafka.errors import ProducerClosed
    from aiokafka.structs import TopicPartition

    from schemas.aiokafka_private import drop_unsent

    async def run() -> list[bool]:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # never started
        accumulator = producer._message_accumulator
        tp = TopicPartition("t", 0)
        queued = accumulator._append_batch(accumulator.create_builder(), tp)  # as `send` adds
        record = queued.append(b"k", b"v", timestamp_ms=None)
        drained = accumulator._pop_batch(tp)  # as the sender takes one: `_pending_batches`
        waiting = accumulator._append_batch(accumulator.create_builder(), tp)
        closing = asyncio.ensure_future(accumulator.close())  # as `stop()` starts it
        drop_unsent(producer)
        await asyncio.wait_for(closing, 5)  # before: pending for good
        await producer.stop()
        failed = record is not None and isinstance(record.exception(), ProducerClosed)
        return [failed, drained is queued, waiting.future.cancelled()]

    assert asyncio.run(run()) == [True, True, True]
