"""The consumer loop of the sink and the notifier stops when told, whatever aiokafka
is waiting for (sinks.consumer).

With the broker gone, aiokafka's consumer waits without a deadline in two places (a
subscribed consumer's `start` and `getmany` during a rebalance both wait for an
assignment that never comes), and its `stop` raised the `CancelledError` of its own
fetch requests: a sink or a notifier signalled during an outage hung, or exited 1
with a traceback. The consumers here are stand-ins that wait the way aiokafka's do
(seen with the real broker stopped: docs/reliability.md); the processes' stop with
the broker stopped was checked by hand (the note of 2026-12-04).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from cancellation import FinishesInOneTurn, cancelled_as_it_finishes

from sinks.consumer import consume, start_consumer, stop_consumer
from sinks.webhooks import warmup


class Waiting:
    """A consumer whose `start` and `getmany` wait for an assignment that never comes."""

    def __init__(self) -> None:
        self.stopped = 0
        self.fetches = 0

    async def start(self) -> None:
        await asyncio.Event().wait()

    async def getmany(self, **_: Any) -> dict[Any, Any]:
        self.fetches += 1
        await asyncio.Event().wait()
        return {}

    async def stop(self) -> None:
        self.stopped += 1

    def assignment(self) -> set[Any]:
        return set()


class NoBatches:
    def fetch_limit(self, _consumer: Any) -> int:
        return 10

    async def handle(self, _tp: Any, _records: Any) -> None:
        raise AssertionError("nothing was fetched")

    async def after_batch(self, _consumer: Any) -> None:
        raise AssertionError("nothing was fetched")

    def idle(self) -> bool:
        return True


async def _set_soon(stop: asyncio.Event) -> None:
    await asyncio.sleep(0.05)
    stop.set()


def test_a_start_that_waits_for_an_assignment_ends_when_told_to_stop() -> None:
    async def main() -> tuple[bool, Waiting]:
        consumer, stop = Waiting(), asyncio.Event()
        setter = asyncio.create_task(_set_soon(stop))
        started = await asyncio.wait_for(start_consumer(consumer, stop), 10)  # type: ignore[arg-type]
        await setter
        return started, consumer

    started, consumer = asyncio.run(main())
    assert started is False
    assert consumer.stopped == 1  # left closed, not half started


def test_a_fetch_that_waits_for_an_assignment_ends_the_loop_when_told_to_stop() -> None:
    async def main() -> Waiting:
        consumer, stop = Waiting(), asyncio.Event()
        setter = asyncio.create_task(_set_soon(stop))
        await asyncio.wait_for(consume(consumer, ["t"], NoBatches(), stop), 10)  # type: ignore[arg-type]
        await setter
        return consumer

    assert asyncio.run(main()).fetches == 1


class StopRaisesItsOwnCancellation:
    """aiokafka's `stop` with the broker gone: `Fetcher.close` awaits a fetch request it
    cancelled itself, and its `CancelledError` escapes; the client is left open."""

    def __init__(self) -> None:
        self.request: asyncio.Task[None] | None = None
        self.client_closed = False
        self._client = self
        self._fetcher = self
        self._pending_tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        self.request = asyncio.ensure_future(asyncio.Event().wait())  # type: ignore[arg-type]
        self._pending_tasks = {self.request, asyncio.ensure_future(asyncio.Event().wait())}  # type: ignore[arg-type]
        self.request.cancel()
        await self.request

    async def close(self) -> None:
        self.client_closed = True


@pytest.mark.parametrize("within_s", [None, 5.0])
def test_a_stop_that_raises_aiokafkas_own_cancellation_completes_the_close(
    within_s: float | None,
) -> None:
    consumer = StopRaisesItsOwnCancellation()
    asyncio.run(stop_consumer(consumer, within_s=within_s))  # type: ignore[arg-type]
    assert consumer.client_closed
    assert all(task.done() for task in consumer._pending_tasks)


class ReaderWaitingThenRaising(StopRaisesItsOwnCancellation):
    """The warm-up's reader with the broker gone: its start waits, its stop raises
    aiokafka's own cancellation."""

    def __init__(self) -> None:
        super().__init__()
        self.starting = asyncio.Event()

    async def start(self) -> None:
        self.starting.set()
        await asyncio.Event().wait()


def test_a_cancelled_warm_up_still_completes_its_readers_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebalance cancels the read-back; its `finally` stops the reader in the cancelled
    task, and `stop_consumer` must not take aiokafka's cancellation for that cancel and
    finish nothing: the reader's client (its sockets) was left open."""
    source = ReaderWaitingThenRaising()
    monkeypatch.setattr(warmup, "reader", lambda *_args: source)

    async def cancelled_read_back() -> None:
        reading = asyncio.create_task(
            warmup.read_back(
                [TopicPartition("cw.alerts", 0)],
                _position,
                warmup.WarmupConfig(records=10, timeout_s=30),
                lambda *_: None,
                lambda _read: None,
                bootstrap="127.0.0.1:9",
            )
        )
        async with asyncio.timeout(5):
            await source.starting.wait()
            reading.cancel()
            await asyncio.wait({reading})

    asyncio.run(cancelled_read_back())
    assert source.client_closed
    assert all(task.done() for task in source._pending_tasks)


async def _position(_tp: TopicPartition) -> int:
    return 10


def test_a_consumer_cancelled_while_it_waits_to_start_ends_with_its_client_closed() -> None:
    """`start_consumer` stops the consumer in the cancelled task's clean-up, where the
    task is cancelling already: `stop_consumer` took aiokafka's own `CancelledError` (a
    stop with the broker gone) for a new cancel of its task, handed it on and left the
    client open, its fetch requests running. Only a cancel since its entry is ours."""
    consumer = ReaderWaitingThenRaising()

    async def cancelled_start() -> None:
        starting = asyncio.create_task(start_consumer(consumer, asyncio.Event()))  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            await consumer.starting.wait()
            starting.cancel()
            await asyncio.wait({starting})
        assert starting.cancelled()

    asyncio.run(cancelled_start())
    assert consumer.client_closed
    assert all(task.done() for task in consumer._pending_tasks)


def test_a_cancellation_of_the_stopping_task_itself_is_handed_on() -> None:
    """...after closing the client: aiokafka never runs a stop cut short again."""

    class Slow:
        def __init__(self) -> None:
            self._client = self
            self.client_closed = False

        async def stop(self) -> None:
            await asyncio.Event().wait()

        async def close(self) -> None:
            self.client_closed = True

    consumer = Slow()

    async def main() -> None:
        stopping = asyncio.create_task(stop_consumer(consumer))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        stopping.cancel()
        await stopping

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert consumer.client_closed


def test_a_cancellation_as_a_stop_with_a_deadline_finishes_is_not_dropped() -> None:
    """Python 3.11's `wait_for` returned the result of a stop that finished in the turn
    its task was cancelled, and dropped the cancellation: a Ctrl-C then went unseen."""

    async def interrupted() -> str:
        consumer = FinishesInOneTurn()
        return await cancelled_as_it_finishes(
            lambda: stop_consumer(consumer, within_s=5.0),  # type: ignore[arg-type]
            consumer.done,
        )

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted())


def test_a_cancelled_loop_leaves_no_fetch_or_start_running_behind_it() -> None:
    """A notifier whose delivery worker died cancels its consuming task: the fetch (or
    start) it waited on kept waiting, orphaned, after the consumer was stopped."""

    async def main() -> list[asyncio.Task[Any]]:
        consumer, stop = Waiting(), asyncio.Event()
        looping = asyncio.create_task(consume(consumer, ["t"], NoBatches(), stop))  # type: ignore[arg-type]
        starting = asyncio.create_task(start_consumer(Waiting(), stop))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        for task in (looping, starting):
            task.cancel()
        await asyncio.gather(looping, starting, return_exceptions=True)
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == []
