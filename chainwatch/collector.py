"""Python's cyclic garbage collector, settled for a long-running worker.

A worker allocates a few container objects per record it touches (facts, visits,
alert dicts) and frees nearly all of them by reference counting: the engine's
data has no cycles. Python's defaults still run a young collection every 700
allocations and a full one every ~70,000, and a full collection walks every
tracked object the process holds, most of them the modules, classes and
pydantic schemas imported at start-up. On a 100,000-record replay that was
~10 % of the worker's CPU (7-9 s of ~78 s), more on larger ones
(docs/performance-engine-history.md, "The garbage collector settled").

So once the worker is built, the objects it holds are moved out of the
collector's sight (`gc.freeze`: they live as long as the process anyway), and
the young generation's threshold is raised, so collections come ~30 times less
often. Cyclic garbage is still collected, only later: the state the engine
keeps is bytes in its tables, not tracked objects.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CollectorSettled:
    """What `settle_collector` did, for the worker's start-up log line."""

    frozen: int
    """Objects moved to the permanent generation (0: left as Python had it)."""
    thresholds: tuple[int, int, int]


def settle_collector(young_threshold: int) -> CollectorSettled:
    """Freeze what the process holds now and collect young objects every
    `young_threshold` allocations; 0 leaves the collector as it is."""
    if young_threshold <= 0:
        return CollectorSettled(0, gc.get_threshold())
    gc.collect()  # what start-up left as garbage is freed, not frozen with the rest
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
    return CollectorSettled(gc.get_freeze_count(), gc.get_threshold())
