"""The batches of a request given up on: their outcomes, which come later, are taken.

aiokafka's `send_batch` gives a shield of the batch's own future. The publisher waited
for them with `gather`, which a cancel (the request's deadline) passes on to each
shield, and a cancelled shield drops its hold on the batch's future: when Kafka later
failed the batch (a broker going away: LeaderNotAvailableError), nothing had read it,
and asyncio logged `Future exception was never retrieved`, one per partition of the
request (bench/faults.py's `broker` scenario, 2026-12-07). The producer here is a
stand-in giving aiokafka's shields over futures the test fails; the frozen broker of
test_publisher_frozen_broker.py never lets a batch be sent.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import LeaderNotAvailableError

from streams.ingest.publisher import PublisherConfig, TransactionalPublisher
from streams.ingest.records import OutRecord


class _Meta:
    offset = 0


class _Batch:
    def append(self, **_: Any) -> _Meta:
        return _Meta()


class _Cluster:
    def available_partitions_for_topic(self, _topic: str) -> set[int]:
        return {0, 1, 2}


class _Client:
    cluster = _Cluster()


class ShieldedBatches:
    """`send_batch` as aiokafka's: a shield of the batch's own future, kept here."""

    client = _Client()

    def __init__(self, partitions: int) -> None:
        self.batches: list[asyncio.Future[Any]] = []
        self.partitions = partitions
        self.all_sent = asyncio.Event()

    async def partitions_for(self, _topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, _batch: _Batch, _topic: str, *, partition: int) -> Any:
        batch = asyncio.get_running_loop().create_future()
        self.batches.append(batch)
        if len(self.batches) == self.partitions:
            self.all_sent.set()
        return asyncio.shield(batch)


def test_batches_failed_after_their_request_was_given_up_on_log_no_unretrieved_error() -> None:
    async def given_up() -> tuple[int, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        producer = ShieldedBatches(partitions=3)
        publisher = TransactionalPublisher(PublisherConfig("127.0.0.1:9", "t-batches"))
        records = [OutRecord("t", f"k{i}".encode(), b"v") for i in range(12)]
        sending = asyncio.ensure_future(
            publisher._send_batched(cast(AIOKafkaProducer, producer), records)
        )
        await producer.all_sent.wait()  # a batch per partition: the publisher waits on them
        sending.cancel()  # the request's deadline
        await asyncio.wait({sending})
        sent = len(producer.batches)
        for batch in producer.batches:  # Kafka fails them later
            batch.set_exception(LeaderNotAvailableError())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del producer, sending
        gc.collect()
        return sent, seen

    sent, seen = asyncio.run(given_up())
    assert sent == 3
    assert [str(ctx.get("message")) for ctx in seen] == []
