"""A token bucket: publish at most `rate` records per second, with a small burst.

The clock and the sleep are parameters so the arithmetic is tested without
waiting; the real ones are `time.monotonic` and `time.sleep`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_EPSILON = 1e-9


class TokenBucket:
    """`take()` blocks until one token is available; tokens refill at `rate` per second.

    The burst (default a tenth of a second's worth) lets a late wake-up catch
    up without ever running ahead of the rate by more than the burst.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self) -> None:
        self._refill()
        while self._tokens < 1.0 - _EPSILON:  # float refills may stop a hair short of 1
            self._sleep((1.0 - self._tokens) / self.rate)
            self._refill()
        self._tokens -= 1.0
