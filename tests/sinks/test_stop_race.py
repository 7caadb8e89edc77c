"""`stopped_first`: a stop that comes while a call runs is seen at once, and a call that
ends first is handed back done, whatever its outcome. `unless_stopped`: a ClickHouse
call raced against the stop, aborted when it can be, waited for in every case, answered
or stopped as its caller wants."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sinks import stop_race
from sinks.stop_race import stopped_first, unless_stopped


def test_a_stop_during_the_call_is_seen_while_the_call_still_runs() -> None:
    async def main() -> None:
        stop, release = asyncio.Event(), asyncio.Event()
        work = asyncio.ensure_future(release.wait())
        asyncio.get_running_loop().call_soon(stop.set)
        assert await asyncio.wait_for(stopped_first(work, stop), timeout=5)
        assert not work.done()  # left to the caller
        release.set()
        await work

    asyncio.run(main())


def test_a_call_that_ends_first_is_handed_back_done_with_its_error() -> None:
    async def fails() -> None:
        raise RuntimeError("refused")

    async def main() -> None:
        stop = asyncio.Event()
        work = asyncio.ensure_future(fails())
        assert not await asyncio.wait_for(stopped_first(work, stop), timeout=5)
        with pytest.raises(RuntimeError, match="refused"):
            work.result()

    asyncio.run(main())


class _Stopped(Exception):
    pass


def _blocked_call(released: threading.Event, ended: threading.Event) -> Callable[[], str]:
    """A call on a thread that answers only once `released` is set (`ended` then)."""

    def call() -> str:
        assert released.wait(timeout=5)
        ended.set()
        return "answer"

    return call


@pytest.mark.parametrize("answer_unabortable", [False, True])
def test_a_stop_aborts_the_call_waits_for_its_thread_and_raises(answer_unabortable: bool) -> None:
    """A server's call: aborted (its thread ends at once), waited for, and the stop raised
    in either mode (what the aborted call says is of no interest)."""
    released, ended = threading.Event(), threading.Event()

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        with pytest.raises(_Stopped):
            await asyncio.wait_for(
                unless_stopped(
                    _blocked_call(released, ended), stop,
                    abort=released.set, stopped=_Stopped,
                    answer_unabortable=answer_unabortable,
                ),
                timeout=5,
            )  # fmt: skip
        assert ended.is_set()  # the thread was waited for

    asyncio.run(main())


@pytest.mark.parametrize("answer_unabortable", [False, True])
def test_a_call_that_cannot_be_aborted_is_waited_for_then_answered_or_stopped(
    answer_unabortable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedded chDB's call: the stop does not end it, so it is waited for; then the
    sink's start raises the stop (nothing more is started), its read-back takes the
    answer (the sink's loop sees the stop next)."""
    released, ended = threading.Event(), threading.Event()
    race = stop_race.stopped_first

    async def seen_then_released(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
        first = await race(work, stop)  # the call is still blocked: the stop came first
        released.set()
        return first

    monkeypatch.setattr(stop_race, "stopped_first", seen_then_released)

    async def main() -> str:
        stop = asyncio.Event()
        stop.set()
        return await asyncio.wait_for(
            unless_stopped(
                _blocked_call(released, ended), stop,
                abort=None, stopped=_Stopped, answer_unabortable=answer_unabortable,
            ),
            timeout=5,
        )  # fmt: skip

    if answer_unabortable:
        assert asyncio.run(main()) == "answer"
    else:
        with pytest.raises(_Stopped):
            asyncio.run(main())
    assert ended.is_set()


def test_a_call_that_ends_before_any_stop_gives_its_answer_or_its_error() -> None:
    def fails() -> str:
        raise RuntimeError("refused")

    async def main() -> None:
        stop = asyncio.Event()
        for answer_unabortable in (False, True):
            answered = await unless_stopped(
                lambda: "answer", stop,
                abort=None, stopped=_Stopped, answer_unabortable=answer_unabortable,
            )  # fmt: skip
            assert answered == "answer"
            with pytest.raises(RuntimeError, match="refused"):
                await unless_stopped(
                    fails, stop, abort=stop.set, stopped=_Stopped,
                    answer_unabortable=answer_unabortable,
                )  # fmt: skip
            assert not stop.is_set()  # not aborted: it had ended

    asyncio.run(main())


@pytest.mark.parametrize(
    ("abortable", "answer_unabortable"), [(False, False), (True, False), (True, True)]
)
def test_an_answer_that_comes_after_the_stop_is_discarded_when_the_stop_is_raised(
    abortable: bool, answer_unabortable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink's start opens a store as the stop comes: the stop is raised and the store
    opened is handed to `discard` (closed, its embedded store's lock on the data
    directory with it), an embedded one's or a server's alike. Before, it was dropped
    open."""
    released, ended = threading.Event(), threading.Event()
    race = stop_race.stopped_first

    async def seen_then_released(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
        first = await race(work, stop)  # the call is still blocked: the stop came first
        released.set()
        return first

    monkeypatch.setattr(stop_race, "stopped_first", seen_then_released)
    discarded: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        with pytest.raises(_Stopped):
            await asyncio.wait_for(
                unless_stopped(
                    _blocked_call(released, ended), stop,
                    abort=(lambda: None) if abortable else None,
                    stopped=_Stopped, answer_unabortable=answer_unabortable,
                    discard=discarded.append,
                ),
                timeout=5,
            )  # fmt: skip

    asyncio.run(main())
    assert discarded == ["answer"]


def test_an_answer_taken_or_an_error_after_the_stop_is_not_discarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The read-back's answer after the stop is the caller's (not discarded); a call
    that fails after the stop has nothing to discard."""
    released, ended = threading.Event(), threading.Event()
    race = stop_race.stopped_first

    async def seen_then_released(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
        first = await race(work, stop)
        released.set()
        return first

    monkeypatch.setattr(stop_race, "stopped_first", seen_then_released)
    discarded: list[str] = []

    def fails() -> str:
        assert released.wait(timeout=5)
        raise RuntimeError("refused")

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        answered = await unless_stopped(
            _blocked_call(released, ended), stop, abort=None, stopped=_Stopped,
            answer_unabortable=True, discard=discarded.append,
        )  # fmt: skip
        assert answered == "answer"
        released.clear()
        with pytest.raises(_Stopped):
            await unless_stopped(
                fails, stop, abort=None, stopped=_Stopped, answer_unabortable=False,
                discard=discarded.append,
            )  # fmt: skip

    asyncio.run(main())
    assert discarded == []
