"""How long an endpoint's oldest unfinished delivery has waited: the sign of a held-up endpoint.

With `concurrency: 1` one delivery whose receiver hangs or answers 5xx is retried up to
the retry horizon while every later alert of the endpoint waits behind it. The queue's
depth does not show that when alerts are rare (three queued alerts may have waited an
hour); the age of the oldest pending delivery does, whatever the traffic.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class PendingAges:
    """The deliveries read and not yet finished (queued, attempted, or waiting to retry),
    with when each was read. Oldest first: an `OrderedDict` pops any of them in O(1)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: OrderedDict[int, tuple[object, float]] = OrderedDict()
        """`id(job)` -> (the job, kept so that its id is not reused meanwhile; when read)."""

    def __len__(self) -> int:
        return len(self._since)

    def read(self, job: object) -> None:
        self._since[id(job)] = (job, self._clock())

    def finished(self, job: object) -> None:
        """Delivered, given up, or dropped (revoked, stopping): waits no more."""
        self._since.pop(id(job), None)

    def clear(self) -> None:
        """The endpoint stopped: what is left is read again by the next run."""
        self._since.clear()

    def oldest_s(self) -> float:
        """Seconds since the oldest pending delivery was read; 0 when there is none."""
        for _job, since in self._since.values():
            return max(0.0, self._clock() - since)
        return 0.0
