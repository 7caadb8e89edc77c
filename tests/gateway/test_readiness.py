"""The gateway's readiness task (streams.ingest.readiness), without Kafka or a server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import structlog
from structlog.testing import capture_logs

from streams.ingest import readiness as readiness_module
from streams.ingest.readiness import Readiness


async def _ends_within(task: asyncio.Task[None], timeout_s: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    return task in done


def _cancelled_by_second_check(
    second_check: Callable[[asyncio.Task[None]], Awaitable[bool]],
) -> tuple[bool, bool]:
    """Start a readiness task whose second check (its first in the background) is
    `second_check(task)`; whether the task ended within 5 s, and whether cancelled."""

    async def scenario() -> tuple[bool, bool]:
        calls = 0
        task: asyncio.Task[None] | None = None

        async def check() -> bool:
            nonlocal calls
            calls += 1
            if calls == 2:
                assert task is not None
                return await second_check(task)
            return True

        readiness = Readiness(check, interval_s=0.01, deadline_s=5.0)
        await readiness.start()
        task = readiness._task
        assert task is not None
        ended = await _ends_within(task, 5.0)
        if not ended:  # do not leave it running past the test
            task.cancel()
            await _ends_within(task, 5.0)
        return ended, task.cancelled()

    return asyncio.run(scenario())


def test_a_cancel_that_arrives_as_a_check_ends_stops_the_background_task() -> None:
    """On Python 3.11 `wait_for` lost such a cancel and the task slept on: a gateway's
    shutdown then waited for it forever (a CI run's "did not stop within 60 s")."""

    async def cancelled_as_it_answers(task: asyncio.Task[None]) -> bool:
        task.cancel()
        return True

    ended, cancelled = _cancelled_by_second_check(cancelled_as_it_answers)
    assert ended, "the readiness task went on after it was cancelled"
    assert cancelled


def test_a_cancel_that_a_call_inside_the_check_swallowed_still_stops_the_task() -> None:
    """A library call inside the check (aiokafka's own `wait_for`s) may lose the cancel
    the same way: the task sees it is being cancelled and stops."""

    async def swallowed_inside(task: asyncio.Task[None]) -> bool:
        async def answer() -> bool:
            task.cancel()  # lands while `wait_for` below waits for this answer
            return True

        return await asyncio.wait_for(answer(), 5.0)  # 3.11: returns, the cancel lost

    ended, cancelled = _cancelled_by_second_check(swallowed_inside)
    assert ended, "the readiness task went on after it was cancelled"
    assert cancelled


def test_a_check_past_its_deadline_marks_the_gateway_not_ready() -> None:
    async def scenario() -> tuple[bool, str | None]:
        async def check() -> bool:
            await asyncio.sleep(10)
            return True

        readiness = Readiness(check, interval_s=60.0, deadline_s=0.05)
        await readiness.check_once()
        state = readiness.state()
        return state.ready, state.error

    ready, error = asyncio.run(scenario())
    assert not ready
    assert error == "no answer within 0.05 s"


def test_stop_ends_the_background_task() -> None:
    async def scenario() -> bool:
        async def check() -> bool:
            return True

        readiness = Readiness(check, interval_s=0.01, deadline_s=1.0)
        await readiness.start()
        task = readiness._task
        assert task is not None
        await asyncio.wait_for(readiness.stop(), 5.0)
        return task.done() and readiness.state().ready

    assert asyncio.run(scenario())


def test_losing_readiness_is_a_warning_that_says_why_and_regaining_it_is_news(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never() -> bool:
        return True

    readiness = Readiness(never, interval_s=60.0, deadline_s=1.0)
    with capture_logs() as logs:
        # a logger made inside the capture: the module's may be cached by an earlier test
        monkeypatch.setattr(readiness_module, "log", structlog.stdlib.get_logger("readiness"))
        readiness.note(True)
        readiness.note(True)  # no change, no line
        readiness.note(False, "kafka unreachable: timed out")
        readiness.note(True)
    assert [(e["log_level"], e["ready"], e.get("error", "-")) for e in logs] == [
        ("info", True, "-"),
        ("warning", False, "kafka unreachable: timed out"),
        ("info", True, "-"),
    ]


def test_a_cancel_of_the_task_stopping_it_is_handed_on() -> None:
    """`stop` suppresses the `CancelledError` of the task it cancelled: a cancel of its
    caller meanwhile (the check's clean-up still running) was suppressed with it, and
    the caller went on as if never cancelled."""

    async def scenario() -> str:
        calls, checking, cleaning = [], asyncio.Event(), asyncio.Event()

        async def check() -> bool:
            calls.append(1)
            if len(calls) == 1:
                return True
            checking.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaning.set()
                await asyncio.Event().wait()  # a clean-up that takes long (a client's close)
            return True

        readiness = Readiness(check, interval_s=0, deadline_s=60.0)
        await readiness.start()  # the first check; the second runs in the background
        background = readiness._task
        assert background is not None

        async def stopping() -> str:
            await readiness.stop()
            return "ran on"

        async with asyncio.timeout(5):
            await checking.wait()
        caller = asyncio.ensure_future(stopping())
        async with asyncio.timeout(5):
            await cleaning.wait()
        caller.cancel()
        async with asyncio.timeout(5):
            await asyncio.wait({caller})
        background.cancel()  # its clean-up is still running: not past the test
        await asyncio.wait({background})
        return "cancelled" if caller.cancelled() else caller.result()

    assert asyncio.run(scenario()) == "cancelled"


def _older_check_failing_after(
    newer: Callable[[Readiness], Awaitable[None]],
) -> tuple[bool, bool]:
    """A check begins, slow, and is held while `newer(readiness)` runs (a newer check, a
    publish noted); then it ends, failed. Whether ready once `newer` has run, and once
    the older check has ended. A newer check answers ready at once."""

    async def scenario() -> tuple[bool, bool]:
        begun, release = asyncio.Event(), asyncio.Event()
        answers = iter([False, True])

        async def check() -> bool:
            answer = next(answers)
            if not answer:  # the older check: slow, and it fails
                begun.set()
                await release.wait()
            return answer

        readiness = Readiness(check, interval_s=600.0, deadline_s=5.0)
        older = asyncio.create_task(readiness.check_once())
        await asyncio.wait_for(begun.wait(), 5.0)
        await newer(readiness)
        ready_after_newer = readiness.state().ready
        release.set()
        await asyncio.wait_for(older, 5.0)
        return ready_after_newer, readiness.state().ready

    return asyncio.run(scenario())


def test_a_check_that_ends_after_a_newer_one_answered_is_not_heard() -> None:
    """The start's first check and the one after the producer's warm-up overlap: the first,
    slow on a loaded machine, failed after the second had said ready, and /readyz said
    "unreachable" until the next check (a CI run beside CPU hogs)."""

    async def newer_check(readiness: Readiness) -> None:
        await readiness.check_once()

    assert _older_check_failing_after(newer_check) == (True, True)


def test_a_publish_noted_after_a_check_began_outranks_that_check() -> None:
    """A publish that reached Kafka is newer news than a check begun before it."""

    async def publish_noted(readiness: Readiness) -> None:
        readiness.note(True)

    _, ready_once_the_older_ended = _older_check_failing_after(publish_noted)
    assert ready_once_the_older_ended
