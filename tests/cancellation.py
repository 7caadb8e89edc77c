"""A cancellation that arrives in the very turn a bounded call finishes.

Python 3.11's `asyncio.wait_for` returned the result of a call that finished in the
turn it was cancelled and dropped the cancellation: a Ctrl-C then went unseen. The
tests of each deadline that moved to `asyncio.timeout` cancel here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def cancelled_as_it_finishes(call: Callable[[], Awaitable[Any]], done: asyncio.Event) -> str:
    """Run `call()` in a task and cancel it as soon as `done` is set (the call's last step);
    "ran on" if the cancellation was dropped, else `CancelledError` out of here."""

    async def body() -> str:
        await call()
        await asyncio.sleep(0)
        return "ran on"

    task = asyncio.ensure_future(body())
    async with asyncio.timeout(10):
        await done.wait()
    task.cancel()
    return await task


class FinishesInOneTurn:
    """A client whose `stop` or `close` finishes after one turn of the loop and says so
    (`done`): the turn `cancelled_as_it_finishes` cancels in."""

    def __init__(self) -> None:
        self.done = asyncio.Event()

    async def stop(self) -> None:
        await asyncio.sleep(0)
        self.done.set()

    close = stop
