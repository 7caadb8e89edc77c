"""At most one log line per kind and window, with how many were held back in between.

A producer writing garbage, or a broker that is down, repeats the same complaint
thousands of times a second; one line per kind and window says the same and
leaves the rest of the log readable. The counters (metrics) keep every one.

In `schemas` (no shape, but the one package the engine and the sinks both stand
on): the sinks' invalid records and the engine's forwarded records share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

MAX_KINDS = 1024
"""Kinds remembered; beyond, the memory is cleared (a flood of kinds is logged afresh)."""


class LogThrottle:
    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._last: dict[Hashable, tuple[float, int]] = {}
        """Per kind: when a line was last let through, and the lines held back since."""

    def admit(self, kind: Hashable) -> int | None:
        """None: hold this line back (it is counted). Otherwise let it through: the number
        of lines of its kind held back since the last one (0 for the first)."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.window_s:
            self._last[kind] = (last[0], last[1] + 1)
            return None
        if last is None and len(self._last) >= MAX_KINDS:
            self._last.clear()
        self._last[kind] = (now, 0)
        return 0 if last is None else last[1]
