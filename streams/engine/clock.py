"""The engine's clock `T` (RULES.md "The clock"), and the per-partition deadline index.

Live mode reads the wall clock, except while a worker catches up with a backlog
(`EngineClock.hold`). Event-time mode advances each partition's
clock with the largest event_time seen there and with ticks (the replay driver
sends the final `T` to every partition); only the final `T` decides the final
alerts, so per-partition clocks that run slightly apart do not matter.

The deadline index is a heap per partition of (deadline, order_id): checking
costs O(log n) per deadline falling due, not O(open orders). It is a cache of
the `next_deadline` stored in each order's slot, rebuilt from the table after
recovery, so it needs no changelog of its own.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal


def appended_ms(message: Any) -> int | None:
    """When Kafka took a faust message (its timestamp, ms); None when it has none."""
    seconds = getattr(message, "timestamp", None)
    if not isinstance(seconds, int | float) or not seconds > 0:
        return None
    return int(seconds * 1000)


@dataclass
class EngineClock:
    mode: Literal["live", "event"]
    _partition_ms: dict[int, int] = field(default_factory=dict)
    _held: dict[int, int] | None = None
    """Live mode while catching up (`hold`): per partition, how far its inputs are read."""
    _held_since_ms: int = 0

    def observe(self, partition: int, event_ms: int | None) -> int:
        """The clock of `partition` after seeing an event at `event_ms`."""
        if self.mode == "live":
            return self.now(partition)
        current = self._partition_ms.get(partition, 0)
        if event_ms is not None and event_ms > current:
            current = self._partition_ms[partition] = event_ms
        return current

    def now(self, partition: int) -> int:
        if self.mode == "event":
            return self._partition_ms.get(partition, 0)
        wall = int(time.time() * 1000)
        if self._held is None:
            return wall
        return min(wall, self._held.get(partition, self._held_since_ms))

    def target(self, partition: int) -> int:
        """What `now` will be once caught up: the wall clock (live), the event clock."""
        return int(time.time() * 1000) if self.mode == "live" else self.now(partition)

    # --- live mode: catching up with a backlog ------------------------------------------

    @property
    def held(self) -> bool:
        return self._held is not None

    def hold(self) -> None:
        """Hold every partition's live clock until the worker has read what Kafka held
        for it (`release`).

        A worker that starts (or is assigned partitions) behind a backlog would judge
        the deadlines that fell due meanwhile before reading the scans that fulfil
        them, all waiting in Kafka: a false breach for each (a page at night), retracted
        minutes later. Held, a partition's clock is where its inputs are read to: the
        latest Kafka timestamp of its order records and scans read so far, never past
        the wall clock, and not before what it had reached (`read_to`).
        """
        if self.mode == "live":
            self._held = {}
            self._held_since_ms = int(time.time() * 1000)

    def read_to(self, partition: int, ms: int | None) -> None:
        """While held: `partition` is read to `ms` (an input Kafka took then, or a time
        its clock had reached before: a stored derivation's)."""
        if self._held is not None and ms is not None and ms > self._held.get(partition, 0):
            self._held[partition] = ms

    def held_s(self) -> float:
        """How long the clock has been held (0 when it is not)."""
        if self._held is None:
            return 0.0
        return time.time() - self._held_since_ms / 1000

    def release(self) -> int:
        """Back to the wall clock (caught up); how long the clock was held (ms)."""
        since, self._held = self._held_since_ms, None
        return int(time.time() * 1000) - since


@dataclass
class DeadlineIndex:
    """Per partition, a heap of (deadline, key); each key has at most one live deadline.

    `schedule` replaces a key's earlier deadline: its heap entry goes stale and is
    dropped, not handed out, when it falls due. An order is scheduled again on every
    change, mostly with the deadline it already had; without this each of those
    entries came out of the heap and cost a read and a decode of the order's stored
    slot only to find it stale.
    """

    _heaps: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    _due: dict[str, int] = field(default_factory=dict)
    """key -> its live deadline"""

    def schedule(self, partition: int, due_ms: int | None, key: str) -> None:
        """Make `due_ms` the key's deadline on `partition` (None: it has none)."""
        if due_ms is None:
            self._due.pop(key, None)
            return
        if self._due.get(key) == due_ms:
            return  # already scheduled
        self._due[key] = due_ms
        heapq.heappush(self._heaps.setdefault(partition, []), (due_ms, key))

    def next_due(self, partition: int) -> int | None:
        """The earliest entry of `partition` (it may be stale: then the real one is later)."""
        heap = self._heaps.get(partition)
        return heap[0][0] if heap else None

    def pop_due(self, partition: int, now_ms: int) -> Iterator[tuple[int, str]]:
        """The live deadlines of `partition` due at `now_ms`, each unscheduled as it is
        handed out; stale entries are dropped on the way."""
        heap = self._heaps.get(partition)
        due = self._due
        while heap and heap[0][0] <= now_ms:
            due_ms, key = heapq.heappop(heap)
            if due.get(key) == due_ms:
                del due[key]
                yield due_ms, key

    def size(self, partition: int) -> int:
        """Entries of `partition`, stale ones included."""
        return len(self._heaps.get(partition, ()))

    def clear(self) -> None:
        self._heaps.clear()
        self._due.clear()

    def partitions(self) -> list[int]:
        return sorted(self._heaps)
