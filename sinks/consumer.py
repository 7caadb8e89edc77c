"""The consumer loop shared by `chainwatch sink` and `chainwatch notify`.

Both read Kafka the same way: a consumer group without auto-commit (each
commits only what it has finished: stored rows, finished deliveries), from the
earliest offset when the group has none, `read_committed`. `consume` fetches in
batches no larger than the handler says it can take (a handler that cannot take
more pauses its partitions and returns 0; the loop keeps polling, so the group
membership stays alive), hands each partition's records over in order, skips
records of partitions a rebalance took away meanwhile, then lets the handler
flush or commit. With `drain` it returns once every subscribed topic is
assigned, the consumer's position has reached the end offsets taken when the
assignment last changed, and the handler is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

POLL_MS = 100


class Batches(Protocol):
    """What `consume` drives: a sink or one endpoint of the notifier."""

    def fetch_limit(self, consumer: AIOKafkaConsumer) -> int:
        """Records the next fetch may return; pause/resume partitions here."""
        ...

    async def handle(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Consecutive records of one assigned partition, in offset order."""
        ...

    async def after_batch(self, consumer: AIOKafkaConsumer) -> None:
        """After each fetch (also an empty one): flush, commit."""
        ...

    def idle(self) -> bool:
        """Nothing in progress (for `drain`)."""
        ...


def new_consumer(bootstrap: str, group_id: str, **options: Any) -> AIOKafkaConsumer:
    settings: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    settings.update(options)
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, **settings)


async def consume(
    consumer: AIOKafkaConsumer,
    topics: Collection[str],
    batches: Batches,
    stop: asyncio.Event,
    *,
    drain: bool = False,
) -> None:
    """Fetch and hand over until `stop` is set (or, with `drain`, until caught up)."""
    targets: dict[TopicPartition, int] | None = None
    while not stop.is_set():
        limit = max(1, batches.fetch_limit(consumer))
        batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=limit)
        for tp, records in batch.items():
            if tp not in consumer.assignment():
                continue  # fetched before a rebalance took the partition away
            await batches.handle(tp, records)
        await batches.after_batch(consumer)
        if drain:
            assigned = consumer.assignment()
            if {tp.topic for tp in assigned} != set(topics):
                continue  # not every topic assigned yet
            if targets is None or set(targets) != assigned:
                targets = await consumer.end_offsets(list(assigned))
            if await caught_up(consumer, targets) and batches.idle():
                return


async def caught_up(consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
    for tp, end in targets.items():
        if int(await consumer.position(tp)) < end:
            return False
    return True
