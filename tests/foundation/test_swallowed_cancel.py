"""A cancellation of our task is never lost inside third-party code (schemas.deadline).

aiokafka's closes await their own tasks inside `contextlib.suppress(CancelledError)`:
under a bare `asyncio.timeout` an outside cancel that landed there was suppressed and
the stop went on as if never cancelled (on a real broker: the gateway publisher's
stop, `stop_consumer`, the warm-up's reader stop, each at some loop turns). Each is
cancelled here after k turns of the loop, k = 0..7: every one must end cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas.deadline import deadline
from sinks.consumer import new_consumer, stop_consumer
from sinks.webhooks import warmup
from streams.ingest.publisher import PublisherConfig, TransactionalPublisher

TURNS = range(8)
"""Loop turns before the cancel: past these the stops below have finished locally."""


async def _swallows_a_cancel() -> None:
    """What aiokafka's close does: awaits a task of its own, its cancellation suppressed."""
    inner = asyncio.ensure_future(asyncio.Event().wait())
    with contextlib.suppress(asyncio.CancelledError):
        await inner


def test_a_cancel_the_body_swallowed_is_raised_on_leaving() -> None:
    async def main() -> None:
        async def body() -> None:
            async with deadline(5):
                await _swallows_a_cancel()

        task = asyncio.ensure_future(body())
        await asyncio.sleep(0)
        task.cancel()
        async with asyncio.timeout(5):
            await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_its_own_expiry_is_a_timeout_also_in_a_task_already_being_cancelled() -> None:
    """A clean-up in a cancelled task's `finally`: the old request is not taken for a
    new one, and the body's own end at the deadline is `TimeoutError`."""

    async def main() -> str:
        async def body() -> str:
            try:
                await asyncio.Event().wait()
            finally:
                try:
                    async with deadline(0.01):
                        await asyncio.Event().wait()
                except TimeoutError:
                    return "timed out"
            return "never"

        task = asyncio.ensure_future(body())
        await asyncio.sleep(0)
        task.cancel()
        async with asyncio.timeout(5):
            return await task

    assert asyncio.run(main()) == "timed out"


async def _publisher_stop(bootstrap: str) -> Awaitable[None]:
    publisher = TransactionalPublisher(PublisherConfig(bootstrap, "swallowed-cancel"))
    assert await publisher.ready()  # a live readiness probe: its close is the stop's
    return publisher.stop()


async def _consumer_stop(bootstrap: str) -> Awaitable[None]:
    consumer = new_consumer(bootstrap, None)
    await consumer.start()
    return stop_consumer(consumer, within_s=5)


async def _group_consumer_stop(bootstrap: str) -> Awaitable[None]:
    """A member of a group with its partition (its heartbeat and its commit-refresh
    routines running), as the sink's and the notifier's consumers are when they stop."""
    name = f"t{uuid.uuid4().hex[:8]}-cut-stop"  # topic and group no other test uses
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    consumer = new_consumer(bootstrap, name)
    consumer.subscribe([name])
    await consumer.start()  # a subscribed consumer starts once it has its assignment
    assert consumer.assignment()
    return stop_consumer(consumer, within_s=5)


async def _warm_up_reader_stop(bootstrap: str) -> Awaitable[None]:
    source = warmup.reader(bootstrap, {})
    await source.start()
    return stop_consumer(source, within_s=warmup.STOP_TIMEOUT_S)  # as the read-back does


Stop = Callable[[str], Awaitable[Awaitable[None]]]


@pytest.mark.parametrize(
    "stop",
    [_publisher_stop, _consumer_stop, _group_consumer_stop, _warm_up_reader_stop],
    ids=["publisher", "stop_consumer", "group member's stop_consumer", "warm-up reader"],
)
def test_a_stop_cancelled_at_any_turn_ends_cancelled(kafka_bootstrap: str, stop: Stop) -> None:
    async def cancelled_after(turns: int) -> bool:
        task = asyncio.ensure_future(await stop(kafka_bootstrap))
        await asyncio.sleep(0)  # started: a stop never begun closes nothing
        for _ in range(turns):
            await asyncio.sleep(0)
        finished = not task.cancel()
        async with asyncio.timeout(15):
            try:
                await task
            except asyncio.CancelledError:
                return True
        return finished  # done before the cancel: nothing to lose

    async def main() -> list[int]:
        return [k for k in TURNS if not await cancelled_after(k)]

    assert asyncio.run(main()) == []


@pytest.mark.parametrize(
    "stop",
    [_consumer_stop, _group_consumer_stop, _warm_up_reader_stop],
    ids=["stop_consumer", "group member's stop_consumer", "warm-up reader"],
)
def test_a_consumer_stop_cancelled_at_any_turn_leaves_nothing_running(
    kafka_bootstrap: str, stop: Stop
) -> None:
    """aiokafka marks the consumer closed first, so a stop cut short by a cancel is never
    run again: its metadata and fetch routines ran on until the loop closed them, and a
    group member's heartbeat (which opened a connection of its own again and kept the
    member in its group, its partitions read by no one) and commit-refresh routines."""

    async def left_after(turns: int) -> list[str]:
        before = asyncio.all_tasks()
        task = asyncio.ensure_future(await stop(kafka_bootstrap))
        for _ in range(turns + 1):
            await asyncio.sleep(0)
        task.cancel()
        async with asyncio.timeout(15):
            await asyncio.wait({task})
        others = asyncio.all_tasks() - before - {task}
        return sorted(t.get_coro().__qualname__ for t in others if not t.done())

    async def main() -> dict[int, list[str]]:
        left = {k: await left_after(k) for k in TURNS}
        return {k: names for k, names in left.items() if names}

    assert asyncio.run(main()) == {}
