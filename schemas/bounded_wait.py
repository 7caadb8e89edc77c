"""Waiting for another task at most so long, never for ever: `ended_within`.

A stop often ends a task it started (aiokafka's sender, the webhook warm-up's
read-back) or waits for one it cannot cancel safely (an HTTP client's close, in
a task of its own). `await task` has no bound: third-party code that swallows the
cancel, or a close that hangs, held the stop for ever. `asyncio.wait({task},
timeout=...)` has one, but a task it leaves behind may fail later, with nobody to
take its exception: asyncio then logs "Task exception was never retrieved" with a
traceback long after the stop, for a failure the caller already gave up on.
`ended_within` is that bounded wait with the exception taken whenever the task
ends, now or later; it says whether the task ended in time and logs nothing, so
each caller words its own warning.

A module of its own, not a function in `deadline.py`: `deadline` bounds a body run
in the caller's own task and raises there (its timeout, a cancel the body
swallowed); this waits for a different task and never raises for it, which is
what a stop needs (the task it gives up on is left to end on its own). A cancel of
the caller still ends the wait at once and propagates; the task keeps running, its
exception still taken. In `schemas` as the one package both streams and sinks
import (like `deadline`, `log_throttle`).
"""

from __future__ import annotations

import asyncio
from typing import Any


async def ended_within(task: asyncio.Future[Any], seconds: float, *, cancel: bool) -> bool:
    """Cancel `task` first if `cancel`, then wait for it at most `seconds`: True if it is
    done by then. Its exception is retrieved once it ends, in time or not."""
    task.add_done_callback(retrieve)  # at once if it is done already
    if cancel:
        task.cancel()
    if not task.done():
        await asyncio.wait({task}, timeout=seconds)
    return task.done()


def retrieve(task: asyncio.Future[Any]) -> None:
    """The task's end taken, so the loop warns of no exception never retrieved (a done
    callback for a future whose outcome nobody else reads)."""
    if not task.cancelled():
        task.exception()
