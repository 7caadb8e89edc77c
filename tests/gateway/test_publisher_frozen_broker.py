"""The gateway's publisher given up on a transaction whose batches a frozen broker holds.

Seen in bench/faults.py (2026-12-07): a request in flight as the broker went away was
answered 503 after its deadline, as it should, and the gateway's log then held asyncio's
errors for what the producer given up on left behind: `Future exception was never
retrieved` (LeaderNotAvailableError, one per partition of the request; `broker`
scenario) and `Task was destroyed but it is pending!` (aiokafka's
`MessageAccumulator.close()`; `kill9` scenario). Here the session's freezable broker
(`freezable_broker`, not the suite's `kafka_bootstrap`) is frozen (SIGSTOP) while a
request is published: nothing of it is acknowledged within its deadline and the slot's
producer is given up on; the broker is thawed before the test ends. (The frozen broker
holds the transaction at its AddPartitionsToTxn, so the batches are never sent: the
unretrieved batch failures are tested with aiokafka's futures alone, in
test_group_commit.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from typing import Any

import pytest
from frozen_broker import accumulator_closes_left, frozen_topic

from chainwatch.local_kafka import BrokerStatus
from streams.ingest.publisher import PublisherConfig, PublishUnavailable, TransactionalPublisher
from streams.ingest.records import OutRecord

pytestmark = pytest.mark.integration


def test_a_producer_given_up_on_a_frozen_broker_leaves_no_task_behind(
    freezable_broker: BrokerStatus,
) -> None:
    """Its accumulator's close was left pending for good, waiting for batches nothing
    would send: collected once the producer was, asyncio logged `Task was destroyed but
    it is pending!` (bench/faults.py's `kill9`, 2026-12-07). Nor does what the close
    ends leave an exception unread (as collected here)."""
    pid = freezable_broker.pid
    assert pid is not None
    bootstrap = freezable_broker.bootstrap

    async def run() -> tuple[BaseException | None, list[asyncio.Task[Any]], list[str]]:
        seen: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        topic = await frozen_topic(bootstrap, partitions=3)
        publisher = TransactionalPublisher(
            PublisherConfig(bootstrap, f"t-{topic}", pool_size=1, publish_timeout_s=2.0)
        )
        await publisher.start()
        refused: BaseException | None = None
        try:
            await publisher.publish([OutRecord(topic, b"warm", b"v")])  # the slot's producer
            records = [OutRecord(topic, f"k{i}".encode(), b"v") for i in range(12)]
            os.kill(pid, signal.SIGSTOP)
            try:
                await publisher.publish(records, within_s=1.0)
            except PublishUnavailable as exc:
                refused = exc
            finally:
                # the given-up producer's close: its abort (2 s), its sender's stop (2 s)
                try:
                    async with asyncio.timeout(30):
                        while publisher._closing:
                            await asyncio.wait(set(publisher._closing))
                finally:
                    os.kill(pid, signal.SIGCONT)
            left = accumulator_closes_left()
            with contextlib.suppress(TimeoutError):  # a close ending now ends in a few turns
                async with asyncio.timeout(10):
                    while left and not all(task.done() for task in left):
                        await asyncio.wait(left, timeout=0.1)
            left = [task for task in left if not task.done()]
        finally:
            os.kill(pid, signal.SIGCONT)
            await publisher.stop()
        del publisher
        for _ in range(3):  # what the producer left is collected: asyncio says so
            gc.collect()
            await asyncio.sleep(0)
        return refused, left, [str(ctx.get("message")) for ctx in seen]

    refused, left, logged = asyncio.run(asyncio.wait_for(run(), 90))
    assert isinstance(refused, PublishUnavailable), refused
    assert left == []
    assert logged == []
