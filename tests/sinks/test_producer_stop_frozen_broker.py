"""A producer's stop cut short on a frozen broker leaves no task behind
(sinks/producer_start.py `stop_producer`: the replay's and backtest's publisher, the
importer's outputs, the notifier's log producer).

aiokafka's `stop()` starts a task of its own that waits for every batch the producer
holds (`MessageAccumulator.close`). A stop past its deadline (records a frozen or
overloaded broker does not take) was cut, its sender cancelled and its client closed
(`_close_anyway`), and that task was left waiting for batches nothing would send any
more: pending for good, and once the producer was collected asyncio logged `Task was
destroyed but it is pending!` - as the gateway's given-up producer did before
`schemas.aiokafka_private.drop_unsent` (tests/gateway/test_publisher_frozen_broker.py,
whose model this is: a broker of the session's own frozen with SIGSTOP, thawed before the
test ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from frozen_broker import accumulator_closes_left, frozen_topic

from chainwatch.local_kafka import BrokerStatus
from sinks.producer_start import start_producer, stop_producer

pytestmark = pytest.mark.integration


def test_a_stop_cut_short_by_a_frozen_broker_leaves_no_task_and_no_waiter_behind(
    freezable_broker: BrokerStatus,
) -> None:
    """Records sent while the broker is frozen (SIGSTOP): the stop's 1 s deadline cuts
    it. Its accumulator's close must end with it, and a record's future awaited (as
    `send_and_wait` does) must not wait for ever; what the producer left is collected
    with nothing logged."""
    pid = freezable_broker.pid
    assert pid is not None
    bootstrap = freezable_broker.bootstrap

    async def run() -> tuple[list[asyncio.Task[Any]], bool, list[str]]:
        seen: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        topic = await frozen_topic(bootstrap, partitions=3)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        await start_producer(producer, bootstrap)
        await producer.send_and_wait(topic, b"warm", key=b"warm")  # metadata, producer id
        os.kill(pid, signal.SIGSTOP)
        try:
            records = [await producer.send(topic, b"v", key=f"k{i}".encode()) for i in range(12)]
            waiting = asyncio.ensure_future(asyncio.wait(records))  # a `send_and_wait`'s await
            await stop_producer(producer, timeout_s=1.0)
            left = accumulator_closes_left()
            with contextlib.suppress(TimeoutError):  # a close ending now ends in a few turns
                async with asyncio.timeout(10):
                    while left and not all(task.done() for task in left):
                        await asyncio.wait(left, timeout=0.1)
            left = [task for task in left if not task.done()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.shield(waiting)
            answered = waiting.done()
            waiting.cancel()
        finally:
            os.kill(pid, signal.SIGCONT)
        del producer, records, waiting
        for _ in range(3):  # what the producer left is collected: asyncio says so
            gc.collect()
            await asyncio.sleep(0)
        return left, answered, [str(ctx.get("message")) for ctx in seen]

    left, answered, logged = asyncio.run(asyncio.wait_for(run(), 90))
    assert left == []
    assert answered, "a record's future of the stopped producer is left pending for ever"
    assert logged == []
