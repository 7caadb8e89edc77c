"""`schemas.bounded_wait.ended_within`: a stop's wait for another task, bounded, the task's
exception taken whenever it ends.

The late cases use a bound of 0.05 s (the wait itself is the only time spent); the
in-time cases a bound of 5 s they never reach, so a loaded machine cannot fail them.
"""

from __future__ import annotations

import asyncio
import gc

from schemas.bounded_wait import ended_within

LATE_S = 0.05
"""The bound a task that swallows its cancel outlives."""
IN_TIME_S = 5.0
"""A bound a task that ends on its cancel never reaches."""


async def _stubborn(
    waiting: asyncio.Event,
    released: asyncio.Event,
    fail: str = "",
    swallowed: asyncio.Event | None = None,
) -> None:
    """A task that swallows its cancel (third-party code's `suppress(CancelledError)`),
    then ends once `released`, raising `ValueError(fail)` if `fail` is given."""
    try:
        waiting.set()
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if swallowed is not None:
            swallowed.set()
        await released.wait()
        if fail:
            raise ValueError(fail) from None


def _never_retrieved(seen: list[dict[str, object]]) -> list[str]:
    """The exceptions asyncio reported as never retrieved, by their message."""
    return sorted(
        str(ctx.get("exception")) for ctx in seen if "never retrieved" in str(ctx.get("message"))
    )


def test_a_task_that_ends_on_its_cancel_ends_in_time() -> None:
    async def run() -> tuple[bool, bool]:
        waiting = asyncio.Event()
        task = asyncio.create_task(_stubborn(waiting, asyncio.Event()))
        task.cancel()  # before its first step: it never reaches the swallowing `except`
        return await ended_within(task, IN_TIME_S, cancel=True), task.cancelled()

    assert asyncio.run(run()) == (True, True)


def test_a_task_that_swallows_its_cancel_is_left_behind_after_the_bound() -> None:
    async def run() -> tuple[bool, bool, bool]:
        waiting, released = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(_stubborn(waiting, released))
        await waiting.wait()
        ended = await ended_within(task, LATE_S, cancel=True)
        left_running = not task.done()
        released.set()
        async with asyncio.timeout(IN_TIME_S):
            await asyncio.wait({task})
        return ended, left_running, task.cancelled()

    # not in time, still running then, and it ended on its own (its cancel swallowed)
    assert asyncio.run(run()) == (False, True, False)


def test_without_cancel_the_task_is_only_waited_for() -> None:
    """As for an HTTP client's close in a task of its own: never cancelled."""

    async def run() -> tuple[bool, bool, bool]:
        released = asyncio.Event()
        task = asyncio.create_task(released.wait())
        ended_late = await ended_within(task, LATE_S, cancel=False)
        left_running = not task.done()
        released.set()
        ended = await ended_within(task, IN_TIME_S, cancel=False)
        return ended_late, left_running, ended and not task.cancelled()

    assert asyncio.run(run()) == (False, True, True)


def test_an_exception_now_or_later_is_retrieved() -> None:
    """asyncio reports an exception nobody took when its task is collected: for a task
    left by `asyncio.wait` alone ("plain", the control: the check sees it) and never for
    one `ended_within` waited for, whether it failed in time or after the bound."""

    async def run() -> list[dict[str, object]]:
        seen: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        released = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        for name in ("plain", "later"):
            waiting = asyncio.Event()
            tasks.append(asyncio.create_task(_stubborn(waiting, released, fail=name)))
            await waiting.wait()
        plain, later = tasks
        plain.cancel()
        assert not (await asyncio.wait({plain}, timeout=LATE_S))[0]
        assert not await ended_within(later, LATE_S, cancel=True)
        released.set()  # both fail now, after their bounds
        waiting = asyncio.Event()
        now = asyncio.create_task(_stubborn(waiting, released, fail="now"))
        await waiting.wait()
        assert await ended_within(now, IN_TIME_S, cancel=True)  # failed in time
        async with asyncio.timeout(IN_TIME_S):
            await asyncio.wait(tasks)
        del tasks, plain, later, now
        gc.collect()
        return seen

    assert _never_retrieved(asyncio.run(run())) == ["plain"]


def test_a_cancel_of_the_caller_ends_the_wait_and_the_task_runs_on() -> None:
    """A second Ctrl-C cutting a stop: the wait ends at once, the task is left to end on
    its own, its exception still taken."""

    async def run() -> tuple[bool, bool, list[dict[str, object]]]:
        seen: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        waiting, released, swallowed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(_stubborn(waiting, released, "after", swallowed))
        await waiting.wait()
        caller = asyncio.create_task(ended_within(task, IN_TIME_S, cancel=True))
        async with asyncio.timeout(IN_TIME_S):
            await swallowed.wait()  # the caller cancelled the task and is in its wait
        caller.cancel()
        async with asyncio.timeout(IN_TIME_S):
            await asyncio.wait({caller})
        left_running = not task.done()
        released.set()
        async with asyncio.timeout(IN_TIME_S):
            await asyncio.wait({task})
        del task
        gc.collect()
        return caller.cancelled(), left_running, seen

    cancelled, left_running, seen = asyncio.run(run())
    assert (cancelled, left_running, _never_retrieved(seen)) == (True, True, [])
