"""What the unit side knows of the occupancy table without decoding it: per unit, per
order, a summary of the order's entry.

A status record must answer, count and fold by the entries its downtimes can
touch. It decoded every entry of the unit: a cost in the orders that visited the
unit within the retention (~55 ms a record on the engine bench, seconds at a
busy unit with 30 days of orders), though most of them overlap no kept downtime
and were never answered, and a status record does nothing with them.
The summary tells those apart: the span of the entry's visits and what it is to a
status record (`PLAIN` ... `TOMBSTONE`: which ones it must read whatever their
visits). `IndexedEntries` decodes only the entries the summaries cannot rule out
(`unit_processor.StoredEntries` says which a status record needs).

The summaries are plain ints in tuples, which the collector stops tracking
(decoded entries kept between steps cost the worker more than they saved:
docs/performance-engine.md, "Tried, not kept"). They are kept in step with the
table: every write of an entry goes through `UnitAgents.apply`, which updates
them; a recovery builds them again by decoding every entry once.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

import orjson

from streams.engine.unit_processor import OccupancyEntry, Span, StoredEntries

Summary = tuple[int | None, int | None, int, int | None]
"""(first start, last end, kind, told) of an entry, in epoch ms. First start None: no
visit (none has a start or an end); last end None: a visit that never ended. Kind: one
of `PLAIN` ... `TOMBSTONE`, plus `SPREAD` if it is frozen and has more than one visit.
Told: the unit's version when it was last answered (`OccupancyEntry.told`)."""

PLAIN = 0
"""Never answered: read when its span overlaps a kept downtime (nothing to tell it else)."""
RETRACTED = 1
"""Answered with no downtime (told one no longer overlaps it): read when its span
overlaps, by a redelivered status record, which sends every answer again, and by a
record new to the unit's value that it was told at the version of or after (a crash
lost the value: `OccupancyEntry.told`)."""
ANSWERED = 2
"""Answered with downtimes: read by every status record (one that ends a downtime
earlier, or a value a crash lost, may leave it overlapping none of them: it is told)."""
FROZEN = 3
"""Frozen before tombstones existed: it counts its order, read when its span overlaps;
a fold deletes it once it overlaps no kept downtime."""
TOMBSTONE = 4
"""An order that left: read when the unit's value has not counted it (its order not in
`UnitSlot.gone`: a crash's leftover); else only a fold deletes it."""
KIND = 7
SPREAD = 8
"""A frozen entry of more than one visit: its span covers the gaps between them, so it
may overlap a downtime none of its visits overlaps (what a fold asks of frozen entries;
left off the others, whose kind a status record compares for each entry)."""

INFINITY = float("inf")

UNREADABLE: Summary = (None, None, ANSWERED, None)
"""The summary of a stored value that does not decode: read by every status record."""


def summary_of(entry: OccupancyEntry) -> Summary:
    """The span of every visit (an unknown start counts as the end, as `_overlapping`
    says): a downtime that overlaps a visit overlaps the span."""
    first: int | None = None
    last: int | None = None
    still_open = False
    visits = 0
    for visit in entry.visits:
        start, end = visit[2], visit[3]
        if start is None:
            start = end
            if start is None:
                continue  # neither: not a visit
        visits += 1
        first = start if first is None else min(first, start)
        if end is None:
            still_open = True
        else:
            last = end if last is None else max(last, end)
    if first is None or still_open:
        last = None
    if entry.frozen:
        kind = (TOMBSTONE if entry.gone else FROZEN) | (SPREAD if visits > 1 else 0)
    elif entry.answered is None:
        kind = PLAIN
    else:
        kind = RETRACTED if entry.answered == [] else ANSWERED
    return (first, last, kind, entry.told)


def decode_entry(raw: bytes) -> OccupancyEntry:
    return OccupancyEntry.from_json(orjson.loads(raw))


class OccupancyIndex:
    """unit_id -> order_id -> the summary of its entry: the occupancy table's keys, and
    what a status record needs to know of their values."""

    def __init__(self) -> None:
        self._units: dict[str, dict[str, Summary]] = {}

    def of(self, unit_id: str) -> dict[str, Summary]:
        """The unit's orders with an entry, and their summaries (live: not a copy)."""
        return self._units.setdefault(unit_id, {})

    def update(
        self, unit_id: str, changed: Mapping[str, OccupancyEntry], deleted: Iterable[str]
    ) -> None:
        """As the table is written: the changed entries put, then the deleted ones gone."""
        summaries = self.of(unit_id)
        for order_id, entry in changed.items():
            summaries[order_id] = summary_of(entry)
        for order_id in deleted:
            summaries.pop(order_id, None)

    @classmethod
    def rebuild(cls, items: Iterable[tuple[Any, bytes | None]]) -> OccupancyIndex:
        """From the table's (`unit|order`, value) items: every entry decoded once.

        A value that does not decode is summarised as read always (`UNREADABLE`): the
        unit's next status record decodes it, and fails, as it did when every entry was
        decoded then (a `processing_error` dead letter of that record, CONTRACT v1.2),
        instead of this rebuild failing in faust's recovery callback, which left every
        unit of the worker without an index.
        """
        index = cls()
        for key, raw in items:
            if raw is not None:
                unit_id, _, order_id = str(key).partition("|")
                try:
                    summary = summary_of(decode_entry(raw))
                except Exception:  # any corrupt value: judged where it is read
                    summary = UNREADABLE
                index.of(unit_id)[order_id] = summary
        return index

    def summaries(self) -> dict[str, dict[str, Summary]]:
        """A copy of every unit's summaries (tests compare it with a rebuilt index)."""
        return {unit_id: dict(s) for unit_id, s in self._units.items() if s}


class IndexedEntries(StoredEntries):
    """A unit's entries as a status record reads them: `select` and `frozen_outside`
    decode (once) only the entries their summaries cannot rule out
    (`unit_processor.StoredEntries`)."""

    def __init__(
        self, summaries: Mapping[str, Summary], load: Callable[[str], OccupancyEntry | None]
    ) -> None:
        super().__init__({})
        self._summaries = summaries
        self._load = load
        self._decoded: dict[str, OccupancyEntry | None] = {}

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._summaries

    def select(
        self,
        spans: Sequence[Span],
        *,
        again: bool = False,
        gone: Container[str] = (),
        told_since: int | None = None,
    ) -> dict[str, OccupancyEntry]:
        ends, earliest = _reach(spans)
        chosen: list[str] = []
        since = INFINITY if again or told_since is None else told_since
        for order_id, (first, last, kind, told) in self._summaries.items():
            # read by their span: PLAIN (0, tested first: most entries, and the scan is
            # what a status record costs in them), RETRACTED unless again or told since,
            # FROZEN
            if (
                not kind
                or (kind == RETRACTED and not again and (told is None or told < since))
                or kind & KIND == FROZEN
            ):
                if first is None:
                    continue
                # the earliest start of the downtimes that end after `first` (`_reach`)
                start = earliest[bisect_right(ends, first)]
                if start == INFINITY or (last is not None and start >= last):
                    continue
            elif kind & KIND == TOMBSTONE and order_id in gone:
                continue  # counted by the unit's value: it counts nothing
            chosen.append(order_id)
        return self._decode(chosen)

    def frozen_outside(self, spans: Sequence[Span]) -> dict[str, OccupancyEntry]:
        ends, earliest = _reach(spans)
        chosen: list[str] = []
        for order_id, (first, last, kind, _) in self._summaries.items():
            if kind & KIND not in (FROZEN, TOMBSTONE):
                continue
            if not kind & SPREAD and first is not None:  # its span is its one visit
                start = earliest[bisect_right(ends, first)]
                if start != INFINITY and (last is None or start < last):
                    continue  # it overlaps a downtime of `spans`
            chosen.append(order_id)
        return self._decode(chosen)

    def _decode(self, order_ids: Iterable[str]) -> dict[str, OccupancyEntry]:
        chosen: dict[str, OccupancyEntry] = {}
        decoded, load = self._decoded, self._load
        for order_id in order_ids:
            if order_id not in decoded:
                decoded[order_id] = load(order_id)
            entry = decoded[order_id]
            if entry is not None:
                chosen[order_id] = entry
        return chosen


def _reach(spans: Sequence[Span]) -> tuple[list[int], list[float]]:
    """The closed downtimes' ends in order and, for each position, the earliest start
    among the downtimes that end from there on (the open ones included, as ending
    last): a span (first, last) overlaps a downtime iff first < its end and its
    start < last (`_overlapping`), i.e. iff the earliest start of those ending after
    `first` is before `last`."""
    closed = sorted((end, start) for start, end, _ in spans if end is not None)
    opened = [start for start, end, _ in spans if end is None]
    earliest: list[float] = [INFINITY] * (len(closed) + 1)
    earliest[-1] = min(opened, default=INFINITY)
    for n in range(len(closed) - 1, -1, -1):
        earliest[n] = min(earliest[n + 1], closed[n][1])
    return [end for end, _ in closed], earliest
