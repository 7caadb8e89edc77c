"""Waiting for a call or a stop, whichever comes first.

A long-running process's stop must not wait for a blocking call's own deadline (a
ClickHouse read, a Kafka look-up): the call runs on a thread and the stop races it.
`stopped_first` only waits: what to do with the call left running (leave its daemon
thread, `sink_runner._looked_up_unless_stopped`) is the caller's. `unless_stopped` is
the race of a ClickHouse call (the sink's start, its read-backs): the requests under way
are aborted on a stop, and the thread waited for; what it answers after the stop (a
store opened) is the caller's `discard`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

T = TypeVar("T")

log = structlog.stdlib.get_logger(__name__)


async def stopped_first(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait until `work` is done or `stop` is set: True when the stop came first (`work`
    still runs), False when `work` is done (its result or error is the caller's)."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((work, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    return not work.done()


async def unless_stopped(
    call: Callable[[], T],
    stop: asyncio.Event,
    *,
    abort: Callable[[], object] | None,
    stopped: type[Exception],
    answer_unabortable: bool,
    discard: Callable[[T], object] | None = None,
) -> T:
    """`call()` on a thread (its answer, or its error), or `stopped` raised as soon as
    `stop` is set while it runs: `abort()` ends the call's requests under way (a
    server's `Deadlines.abort`), so the thread ends at once instead of at their
    deadlines, and is waited for (what it says after the abort is of no interest).

    With no `abort` (an embedded chDB: its calls cannot be aborted) the thread is waited
    for all the same, and then `answer_unabortable` decides: False, `stopped` (the
    sink's start: a stop means nothing more is started, an opened store or offset bases
    are of no use); True, the call's answer or error as if no stop had come (the sink's
    read-back: the read is done, and the sink's own loop sees the stop next).

    An answer the call gives after the stop, when `stopped` is raised, is handed to
    `discard` (the sink's start: the store it opened is closed, its embedded store's
    lock on the data directory with it); a failure of `discard` is logged."""
    work = asyncio.ensure_future(asyncio.to_thread(call))
    if not await stopped_first(work, stop):
        return work.result()
    if abort is None and answer_unabortable:
        return await work
    if abort is not None:
        abort()
    with contextlib.suppress(Exception):  # what it says after the abort is of no interest
        answer = await work
        if discard is not None:
            _discarded(discard, answer)
    raise stopped


def _discarded(discard: Callable[[T], object], answer: T) -> None:
    try:
        discard(answer)
    except Exception as exc:  # the stop goes on: said, not raised
        log.warning("stopped_call_discard_failed", error=f"{type(exc).__name__}: {exc}")
