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
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal


def appended_ms(message: Any) -> int | None:
    """When Kafka took a faust message (its timestamp, ms); None when it has none."""
    seconds = getattr(message, "timestamp", None)
    if not isinstance(seconds, int | float) or not seconds > 0:
        return None
    return int(seconds * 1000)


@dataclass(slots=True)
class _CatchingUp:
    """A live partition's clock while its worker reads what waited in Kafka for it."""

    since_ms: int
    """When the hold began (wall clock): `HOLD_MOST_S` counts from here."""
    floor_ms: int = 0
    """A time its clock had reached before (its stored derivations'): the clock is not
    before it. Without one (nothing stored there, or stored before slots kept their
    time) it is not before the earliest record read there (an order's records come
    before its scans), nor, with nothing read yet, before the hold's start."""
    first_ms: int = 0
    """The earliest Kafka timestamp read on it during the hold (0: none yet)."""
    read_ms: dict[str, int] = field(default_factory=dict)
    """topic -> the latest Kafka timestamp of the records read there."""
    read_to_end: set[str] = field(default_factory=set)
    """The topics read to their end: these no longer hold the clock back."""
    reached_ms: int = 0
    """The latest time `now` gave during this hold from what was stored or read: it
    never goes back from there within one. (Before anything is known `now` says the
    hold's start and keeps nothing: the first record read sets the clock.)"""


@dataclass
class EngineClock:
    mode: Literal["live", "event"]
    _partition_ms: dict[int, int] = field(default_factory=dict)
    _catching: dict[int, _CatchingUp] = field(default_factory=dict)
    """Live mode: the partitions whose clock is held (`hold`)."""
    held_topics: tuple[str, ...] = ()
    """The topics whose reading a held clock follows (the order side's records)."""

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
        held = self._catching.get(partition)
        if held is None:
            return wall
        read = held.read_ms
        bound = min(
            (wall if t in held.read_to_end else read.get(t, 0) for t in self.held_topics),
            default=wall,
        )
        low = held.floor_ms or held.first_ms
        if not low:  # nothing stored, nothing read: no time to hold it at yet
            return max(held.reached_ms, min(wall, held.since_ms))
        now = max(held.reached_ms, min(wall, max(low, bound)))
        held.reached_ms = now
        return now

    def target(self, partition: int) -> int:
        """What `now` will be once caught up: the wall clock (live), the event clock."""
        return int(time.time() * 1000) if self.mode == "live" else self.now(partition)

    # --- live mode: catching up with a backlog ------------------------------------------

    def hold(self, partitions: Iterable[int]) -> None:
        """Hold the live clock of `partitions` (all this worker owns, at a recovery)
        until it has read what Kafka held for them (`release`).

        A worker that starts (or takes over partitions) behind a backlog would judge
        the deadlines that fell due meanwhile before reading the scans that met
        them, all waiting in Kafka: a false breach for each (a page at night),
        retracted minutes later. Held, a partition's clock is where its order records
        and scans are both read to: the earlier of the latest Kafka timestamps read
        on each (a topic read to its end no longer counts), never past the wall
        clock, and not before what it had reached (`floor`). A partition already
        held keeps its hold (and when it began), its topics to be read to their end
        again. A partition the worker kept through a rebalance is held too: faust
        paused it while the tables recovered, and its scans may have piled up.
        """
        if self.mode != "live":
            return
        wall = int(time.time() * 1000)
        for partition in partitions:
            held = self._catching.get(partition)
            if held is None:
                self._catching[partition] = _CatchingUp(since_ms=wall)
            else:  # held still (a recovery within a hold): its topics are to be read again
                held.read_to_end.clear()

    def floor(self, partition: int, ms: int | None) -> None:
        """A time a held partition's clock had reached before (a stored derivation's)."""
        held = self._catching.get(partition)
        if held is not None and ms is not None and ms > held.floor_ms:
            held.floor_ms = ms

    def read_to(self, partition: int, topic: str, appended_ms: int | None) -> None:
        """A record of `topic` that Kafka took at `appended_ms` is read on a held partition."""
        held = self._catching.get(partition)
        if held is None or appended_ms is None:
            return
        if appended_ms > held.read_ms.get(topic, 0):
            held.read_ms[topic] = appended_ms
        if not held.first_ms or appended_ms < held.first_ms:
            held.first_ms = appended_ms

    def read_to_end(self, partition: int, topic: str) -> None:
        """`topic` is read to its end on a held partition: it holds the clock back no more."""
        held = self._catching.get(partition)
        if held is not None:
            held.read_to_end.add(topic)

    @property
    def holding(self) -> bool:
        """Whether any partition's clock is held."""
        return bool(self._catching)

    def held(self) -> list[int]:
        """The partitions whose clock is held."""
        return sorted(self._catching)

    def held_s(self, partition: int) -> float:
        """How long `partition`'s clock has been held (0 when it is not)."""
        held = self._catching.get(partition)
        return 0.0 if held is None else time.time() - held.since_ms / 1000

    def release(self, partition: int) -> float:
        """Back to the wall clock (caught up, or given up); how long it was held (s)."""
        held_s = self.held_s(partition)
        self._catching.pop(partition, None)
        return held_s

    def forget(self, keep: Collection[int]) -> None:
        """Drop the holds of partitions this worker no longer owns."""
        for partition in [p for p in self._catching if p not in keep]:
            del self._catching[partition]


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
