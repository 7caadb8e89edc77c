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
from collections.abc import Collection, Mapping
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


def new_consumer(bootstrap: str, group_id: str | None, **options: Any) -> AIOKafkaConsumer:
    """A consumer that commits only what it is told to (None: no group, it commits nothing)."""
    settings: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    settings.update(options)
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, **settings)


COMMIT_TIMEOUT_S = 10.0
"""A commit of finished offsets gives up after this (they are offered again next time)."""


async def commit_within(
    consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int | tuple[int, str]]
) -> None:
    """`consumer.commit(offsets)` (each an offset or `(offset, metadata)`), or `TimeoutError`
    after `COMMIT_TIMEOUT_S`: aiokafka's commit waits for a group coordinator as long as
    the broker is gone, and a stop of the sink or the notifier waits for the commit."""
    await asyncio.wait_for(consumer.commit(dict(offsets)), COMMIT_TIMEOUT_S)


async def start_consumer(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
    """`consumer.start()`, or False (the consumer stopped) when `stop` comes first.

    A subscribed consumer's start waits for its first assignment, and while a dead
    member of the group holds the rebalance (a process killed within its session
    timeout) or the broker is gone, that is a long or endless wait: a sink or a
    notifier signalled meanwhile did not stop.
    """
    starting = asyncio.ensure_future(consumer.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        if await _before(starting, stopped):
            starting.result()  # its failure, if any, is the caller's
            return True
    except BaseException:  # our own task cancelled: no start left running behind it
        await stop_consumer(consumer)
        raise
    finally:
        stopped.cancel()
    await stop_consumer(consumer)
    return False


async def _before(work: asyncio.Future[Any], stopped: asyncio.Future[Any]) -> bool:
    """Whether `work` finished before `stopped`. If not, or if our own task is cancelled
    while waiting, `work` is cancelled and awaited: nothing is left running behind."""
    try:
        await asyncio.wait((work, stopped), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise
    if work.done():
        return True
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    return False


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """`consumer.stop()`, also when aiokafka's own close raises `CancelledError`.

    With the broker gone, aiokafka's `Fetcher.close` cancels its fetch requests and
    then awaits each of them without catching the cancellation it caused, so the
    stop raised `CancelledError` and the sink or the notifier, stopped by a signal
    during an outage, exited 1 with a traceback. A cancellation of our own task is
    handed on; theirs is finished here: the fetches left are cancelled and awaited,
    and the client (the sockets) closed as `stop` would have.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        fetcher = getattr(consumer, "_fetcher", None)
        pending = list(getattr(fetcher, "_pending_tasks", ()))
        for request in pending:
            request.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await consumer._client.close()


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
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            batch = await _fetch(consumer, max(1, batches.fetch_limit(consumer)), stopped)
            if batch is None:
                return
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
    finally:
        stopped.cancel()


async def _fetch(
    consumer: AIOKafkaConsumer, limit: int, stopped: asyncio.Future[Any]
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] | None:
    """One `getmany`, or None when `stopped` comes first.

    aiokafka's `getmany` ignores its timeout while the group rebalances (it waits for
    the assignment), and with the broker gone the rebalance never ends: a sink or a
    notifier stopped during an outage waited for ever. What a cancelled fetch had
    read is read again after the restart (nothing of it was committed).
    """
    fetch: asyncio.Future[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]
    fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=POLL_MS, max_records=limit))
    return fetch.result() if await _before(fetch, stopped) else None


async def caught_up(consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
    for tp, end in targets.items():
        if int(await consumer.position(tp)) < end:
            return False
    return True
