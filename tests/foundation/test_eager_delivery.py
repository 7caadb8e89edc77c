"""streams.eager_delivery: the fetch loop's delivery without four tasks per record, and
without changing what a rebalance (`suspend_flow`) does to a delivery that blocks."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from mode import Service

from streams.eager_delivery import Done, EagerDelivery, deliver_in_bulk, step_eagerly
from streams.kafka_transport import ReadCommittedTransport

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="outer")


class Fetcher(EagerDelivery, Service):
    """The host faust's consumer is: a mode service with a `suspend_flow` event."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(body(), timeout=10))


def test_the_consumer_of_the_engine_takes_the_eager_wait() -> None:
    assert issubclass(ReadCommittedTransport.Consumer, EagerDelivery)


def test_a_coroutine_that_never_suspends_is_done_in_its_first_step() -> None:
    async def add(a: int, b: int) -> int:
        return a + b

    assert step_eagerly(add(2, 3)) == Done(5)


def test_a_suspended_coroutine_continues_where_it_stopped() -> None:
    async def body() -> tuple[list[str], str]:
        seen: list[str] = []
        gate = asyncio.get_running_loop().create_future()

        async def delivery() -> str:
            seen.append("before")
            got = await gate
            seen.append("after")
            return f"got {got}"

        step = step_eagerly(delivery())
        assert not isinstance(step, Done)
        assert seen == ["before"]  # the first step ran at once, not twice
        gate.set_result("x")
        return seen, await step

    seen, result = run(body)
    assert result == "got x"
    assert seen == ["before", "after"]


def test_an_error_in_the_first_step_is_raised() -> None:
    async def broken() -> None:
        raise ValueError("undecodable")

    with pytest.raises(ValueError, match="undecodable"):
        step_eagerly(broken())


def test_the_coroutine_runs_in_a_context_of_its_own_as_a_task_does() -> None:
    async def body() -> tuple[str, str]:
        gate = asyncio.get_running_loop().create_future()
        seen: list[str] = []

        async def delivery() -> None:
            VAR.set("inner")
            await gate
            seen.append(VAR.get())  # later steps run in the context of the first

        step = step_eagerly(delivery())
        outside = VAR.get()
        gate.set_result(None)
        assert not isinstance(step, Done)
        await step
        return outside, seen[0]

    assert run(body) == ("outer", "inner")


def test_a_delivery_that_does_not_block_takes_no_task() -> None:
    async def body() -> tuple[Any, int, int]:
        fetcher = Fetcher()
        loop = asyncio.get_running_loop()
        made = 0
        default = loop.get_task_factory()

        def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
            nonlocal made
            made += 1
            return default(loop, coro, **kw) if default else asyncio.Task(coro, loop=loop, **kw)

        async def delivery() -> str:
            return "put"

        loop.set_task_factory(counting)
        try:
            eager = await fetcher.wait_first(delivery(), fetcher.suspend_flow.wait())
            eager_tasks = made
            fetcher.suspend_flow.set()  # a rebalance: mode's way, a task per argument
            await fetcher.wait_first(delivery(), fetcher.suspend_flow.wait())
        finally:
            loop.set_task_factory(default)
        return eager, eager_tasks, made - eager_tasks

    with_flow, eager_tasks, suspended_tasks = run(body)
    assert with_flow.results == ["put"]
    assert not with_flow.stopped
    assert eager_tasks == 0
    assert suspended_tasks == 4  # the delivery, the suspend event, stopped, crashed


def blocked_delivery(meanwhile: Callable[[Fetcher, asyncio.Event], None]) -> tuple[list[str], Any]:
    """A delivery blocked on a full stream buffer while, one loop turn later,
    `meanwhile(fetcher, buffer_has_room)` runs: what the delivery saw, and the wait's result."""

    async def body() -> tuple[list[str], Any]:
        fetcher = Fetcher()
        buffer_has_room = asyncio.Event()
        seen: list[str] = []

        async def delivery() -> str:
            seen.append("decoded")
            try:
                await buffer_has_room.wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            seen.append("put")
            return "put"

        async def later() -> None:
            await asyncio.sleep(0)
            meanwhile(fetcher, buffer_has_room)

        happening = asyncio.create_task(later())
        result = await fetcher.wait_first(delivery(), fetcher.suspend_flow.wait())
        await happening
        await asyncio.sleep(0)  # mode cancels the loser: let a cancellation land
        return seen, result

    outcome: tuple[list[str], Any] = run(body)
    return outcome


def test_a_blocked_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    seen, result = blocked_delivery(lambda fetcher, _: fetcher.suspend_flow.set())
    assert seen == ["decoded", "cancelled"]
    assert result.results == [True]  # the suspend event won (`Event.wait` returns True)


def test_a_blocked_delivery_completes_when_the_buffer_drains() -> None:
    seen, result = blocked_delivery(lambda _, buffer_has_room: buffer_has_room.set())
    assert seen == ["decoded", "put"]
    assert result.results == ["put"]


def turns_at_five_deliveries(*, bulk: bool) -> list[int]:
    """The turns another task (a stream's drainer: one step per turn) had made when
    each of five deliveries in a row, none of which blocks, ran; `bulk`: the
    fetcher's app was marked `deliver_in_bulk` first."""

    async def body() -> list[int]:
        fetcher = Fetcher()
        if bulk:
            deliver_in_bulk(SimpleNamespace(_consumer=fetcher))
        turns = 0
        seen_at: list[int] = []

        async def other_task() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        async def delivery() -> None:
            seen_at.append(turns)

        turning = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        for _ in range(5):
            await fetcher.wait_first(delivery(), fetcher.suspend_flow.wait())
        turning.cancel()
        return seen_at

    seen_at: list[int] = run(body)
    assert len(seen_at) == 5
    return seen_at


def test_the_loop_turns_between_two_deliveries_as_it_did_with_a_task_each() -> None:
    """faust's streams move one record per loop turn: a fetch loop that handed over
    many records per turn starved them (the engine's batches shrank to ~50 records)."""
    seen_at = turns_at_five_deliveries(bulk=False)
    assert all(later > earlier for earlier, later in itertools.pairwise(seen_at))


def test_a_worker_that_takes_in_bulk_delivers_a_fetch_without_a_turn_per_record() -> None:
    """`deliver_in_bulk` (a worker whose streams all drain their channel at once,
    `take_growing`): a fetch's records are handed on within one turn of the loop."""
    assert len(set(turns_at_five_deliveries(bulk=True))) == 1
    deliver_in_bulk(SimpleNamespace(_consumer=None))  # no consumer built: nothing to change
