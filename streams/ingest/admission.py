"""Admission by requests in flight: a bounded number handled at once, a short queue before it.

uvicorn's `limit_concurrency` counted every open connection, idle keep-alive ones
and ones still sending their headers included, when a request's headers ended:
300 scanners posting at once after a network blip got 300 x 503, and a client
without a token could hold every slot with headers it never finished. The gateway
now admits requests itself, after their token was checked: at most `limit` are
handled at once (body, validation, publish); a request beyond waits in arrival
order for one of them to end, at most `wait_s`, and is refused only then. A
connection costs nothing here until a request on it is admitted; requests beyond a
much higher number of open connections (`gateway.limit_connections`) are refused
before they get here.

A waiting request is only a future on the event loop: it ends by a slot, by its
deadline or by a cancel (a shutdown past its grace), and a slot handed to it as it
was cancelled passes on to the next, so none is ever lost. The refusals' `Retry-After`
is jittered (`jittered_retry_after`), like every 503 of the gateway's: clients refused
together must not all come back in the same second.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque

RETRY_AFTER_JITTER_PERCENT = 40
"""The share of `retry_after_s` a refusal's `Retry-After` varies by, either way, at most."""


def retry_after_bounds(retry_after_s: int) -> tuple[int, int]:
    """The least and the most `jittered_retry_after` answers: `retry_after_s` plus or
    minus `RETRY_AFTER_JITTER_PERCENT` of it rounded down to whole seconds, so never
    more than that share (rounded up, 7 s spread to 4-10 s: +-43 %), yet at least a
    second either way so a small setting still spreads, and never below 1 s."""
    spread = max(1, retry_after_s * RETRY_AFTER_JITTER_PERCENT // 100)
    return max(1, retry_after_s - spread), retry_after_s + spread


def jittered_retry_after(retry_after_s: int) -> int:
    """A `Retry-After` drawn at random within `retry_after_bounds`: a burst refused at
    once (an overload, or every client of a Kafka outage) comes back spread out."""
    return random.randint(*retry_after_bounds(retry_after_s))  # noqa: S311


class Admission:
    """At most `limit` admitted at once; beyond, `enter` waits up to `wait_s`, first come
    first served. Not thread-safe: one event loop's."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.admitted = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def enter(self) -> bool:
        """Whether a slot was had (then `leave` must follow), within `wait_s`."""
        # the hot path: no future. While any request waits, every slot is taken (`leave`
        # hands a slot straight to the longest waiting), so a newcomer cannot pass it.
        if self.admitted < self.limit:
            self.admitted += 1
            return True
        if self.wait_s <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter
        except TimeoutError:
            pass  # a slot handed over just as the deadline fired is still taken below
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a slot as it was cancelled: the next one gets it
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in self._waiters:  # on its deadline or cancel (rare: a linear scan)
                self._waiters.remove(waiter)
        return not waiter.cancelled()

    def leave(self) -> None:
        """An admitted request ended: its slot goes to the longest waiting, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: `admitted` stays
                return
        self.admitted -= 1
