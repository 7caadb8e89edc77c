"""The engine's clock `T` (RULES.md "The clock"), and the per-partition deadline index.

Live mode reads the wall clock. Event-time mode advances each partition's
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
from typing import Literal


@dataclass
class EngineClock:
    mode: Literal["live", "event"]
    _partition_ms: dict[int, int] = field(default_factory=dict)

    def observe(self, partition: int, event_ms: int | None) -> int:
        """The clock of `partition` after seeing an event at `event_ms`."""
        if self.mode == "live":
            return int(time.time() * 1000)
        current = self._partition_ms.get(partition, 0)
        if event_ms is not None and event_ms > current:
            current = self._partition_ms[partition] = event_ms
        return current

    def now(self, partition: int) -> int:
        return self.observe(partition, None)


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
