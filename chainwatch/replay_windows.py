"""Why a replay publishes its file in event-time windows, and where a window ends.

A live pipeline receives every topic at about the same event time. A replay
that published a whole file first would not: one worker reads the topics and
partitions at their own pace, so the unit-status topic (a few thousand records)
can be read to its last day while the scans (tens of thousands) are still in the
first week. With bounded state (CONTRACT v1.2) that is not harmless: a unit folds
away a downtime that ended `unit_lookback_ms` before its own clock unless a visit
it knows overlaps it, and an order leaves the state `closed_order_retention_ms`
after it closed on its partition's clock. A visit, a downtime notice or a
customer answer that arrives after that through an internal topic finds nothing
to join: the 50,000-record fleet run lost 179 alerts and joined 65 wrongly so
(docs/scaling.md).

So the replay publishes the file in windows of event time and lets the engine
drain each window (every join answered) before it publishes the next. Arrival
skew inside a window is at most its length, which is kept well under both
horizons, so every join a reference engine makes is made by the streaming one.
Unreadable lines stay in the window they come in; a record older than the
window's start (a late record in the file) does not open a new one.

A CRM record has no event time, yet it changes the alerts only of orders still
in the state when it arrives (a closed order's alerts are final once it is
evicted). So a CRM record that follows timed records is a window of its own
(consecutive ones share one): everything before it in the file is drained before
it is sent, and its answers before anything after it, and the orders it reaches
are the same whatever the number of workers: those not yet evicted on their
partition's clock at its place in the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.engine.limits import EngineLimits

WINDOW_SHARE = 4
"""A window is a quarter of the shorter horizon (7.5 days at the defaults)."""


def window_ms(limits: EngineLimits) -> int:
    """The window length for these limits: far below both horizons."""
    return max(1, min(limits.unit_lookback_ms, limits.closed_order_retention_ms) // WINDOW_SHARE)


@dataclass(slots=True)
class EventTimeWindows:
    """Says, record by record in file order, when a new window begins."""

    length_ms: int
    start_ms: int | None = None
    """Event time of the current window's first timed record (None: none yet)."""
    number: int = 0
    """Windows closed so far."""
    crm_window: bool = False
    """Whether the current window holds CRM records after timed ones."""

    def starts_new(self, event_ms: int | None, *, crm: bool = False) -> bool:
        """Whether this record belongs to a new window (then it opens it).

        `event_ms` is the record's event time (None: it has none); `crm`: it is
        a CRM record.
        """
        if crm:
            if self.crm_window or self.start_ms is None:
                return False  # the same CRM window, or the CRM set-up before any event
            self.crm_window = True
            return self._open(None)
        if event_ms is None:
            return False
        if self.crm_window:
            self.crm_window = False
            return self._open(event_ms)
        if self.start_ms is None:
            self.start_ms = event_ms
            return False
        if event_ms - self.start_ms < self.length_ms:
            return False
        return self._open(event_ms)

    def _open(self, start_ms: int | None) -> bool:
        if start_ms is not None:
            self.start_ms = start_ms
        self.number += 1
        return True
