"""Streaming a run live: paced by a token bucket, bounded, stoppable with Ctrl-C.

The loop is the same for every destination; a `Publisher` only moves one
record. Lifecycle: `send` is called in publication order; `close` runs
exactly once at the end - after exhaustion, a bound, Ctrl-C or an error - and
must flush whatever is buffered, so a clean stop loses nothing already sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from simulator.pacing import TokenBucket
from simulator.records import SimRecord
from simulator.summary import Summary


class Publisher(Protocol):
    def send(self, record: SimRecord) -> None: ...

    def close(self) -> None:
        """Flush and release; called once."""


@dataclass(frozen=True, slots=True)
class Progress:
    sent: int
    elapsed_s: float
    sim_ms: int


@dataclass(frozen=True, slots=True)
class LiveResult:
    sent: int
    elapsed_s: float
    stopped_by: str
    """`exhausted`, `max_events`, `duration` or `interrupted`."""


def run_live(
    records: Iterable[SimRecord],
    publisher: Publisher,
    summary: Summary,
    *,
    rate: float | None,
    max_events: int | None = None,
    duration_s: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> LiveResult:
    """Send `records` at `rate` per second (None = as fast as the publisher takes them)."""
    bucket = TokenBucket(rate, clock=clock, sleep=sleep) if rate else None
    started = clock()
    next_report = started + progress_every_s
    sent = 0
    stopped_by = "exhausted"
    try:
        for record in records:
            if max_events is not None and sent >= max_events:
                stopped_by = "max_events"
                break
            now = clock()
            if duration_s is not None and now - started >= duration_s:
                stopped_by = "duration"
                break
            if bucket is not None:
                bucket.take()
            publisher.send(record)
            summary.add(record)
            sent += 1
            if progress is not None and now >= next_report:
                progress(Progress(sent, now - started, record.at_ms))
                next_report = now + progress_every_s
    except KeyboardInterrupt:
        stopped_by = "interrupted"
    finally:
        publisher.close()
    return LiveResult(sent, clock() - started, stopped_by)
