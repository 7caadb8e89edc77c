"""The log of the input records the engine forwards to their id's partition.

A keyless producer has (N-1)/N of its records forwarded (`schemas.placement`;
keyed records are never forwarded):
one line each would bury the rest of the log. The first of a logical topic is
logged at once, then at most one line per topic and `window_s` saying how many
more there were; `chainwatch_worker_records_total{outcome="forwarded"}` counts
every one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from schemas.log_throttle import LogThrottle
from schemas.placement import Misplaced

log = structlog.stdlib.get_logger(__name__)


class ForwardLog:
    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = LogThrottle(window_s, clock)

    def forwarded(self, topic: str, partition: int, offset: int, away: Misplaced) -> None:
        """`topic`: the logical input topic the record was read from, at `partition`/`offset`."""
        held_back = self._throttle.admit(topic)
        if held_back is None:
            return
        log.warning(
            "record_forwarded_to_its_partition",
            topic=topic,
            partition=partition,
            offset=offset,
            home_partition=away.home,
            fix=away.advice(topic),
            **({"more_since_last_line": held_back} if held_back else {}),
        )
