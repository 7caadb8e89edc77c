"""One unit's side of the unit -> order join, and its own alerts (pure, no Kafka).

A unit keeps its status records (the facts of its downtimes) and, per order
that visited it, the visits as the order last reported them (its occupancy).
From both it answers each order with the downtimes that overlap the order's
visits there — only when that answer changes, so a breakdown reaches the
orders it touched, not every order the unit ever saw.

Its state is bounded (streams.engine.limits): after each record it folds away
the downtimes no visit can still need; what it keeps depends on its own status
log, not on when the orders' visits reached it (within the lookback). The orders
in progress during a downtime are not kept in the unit's value (a long outage at
a busy unit overlaps thousands of orders, and the value passed Kafka's limit): the
occupancy entries of the orders in the state are them. The unit keeps per downtime
only their count and the first ids (`Progress`), brought up to date report by report
and derived again from every entry when that cannot be done (a listed order left
the downtime, a report came again after a crash), or from the entries a status
record's downtimes can touch (`StoredEntries`) when one comes.

An order that leaves the state (a `forget`: evicted after the retention) stays
counted in the downtimes its final visits overlap then: it moves into the unit's
count of the orders that left (`UnitSlot.left`), and its entry becomes a
tombstone (`OccupancyEntry.gone`) that tells a forget or report that comes again
(at-least-once) from a new one. The unit keeps the tombstones of the last
`max_unit_left_orders` orders that left (`UnitSlot.gone`, in inbox order; a
report of one of them that comes again after its entry went is skipped) and
deletes older ones: before, the entry stayed, frozen, until every downtime it
overlapped was folded away, and a downtime that never ends (an `up` never sent)
is never folded, so the entries grew with every order that visited the unit.
The cost (limits.py): a forget or report of an order that comes again after more
than that many later orders left the unit counts the order twice, and a status
record that comes after an order left does not count or uncount it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from itertools import islice
from typing import Any

import orjson

from schemas.dead_letter import DeadLetter, DeadLetterSource, ErrorDetail, ReasonCode
from schemas.plan import SlaPlan
from streams.engine.limits import EngineLimits
from streams.engine.messages import DowntimeAnswer, Occupancy
from streams.engine.order_slot import downtime_to_json
from streams.rules.alert_json import alert_json
from streams.rules.diff import alert_changes
from streams.rules.downtimes import Downtime, build_downtimes
from streams.rules.evaluate import ORDERS_LISTED, evaluate_unit
from streams.rules.facts import DowntimeRecord, from_ms, to_ms


class Taken(Enum):
    """What a unit slot did with a status record (`UnitSlot.take`)."""

    ADDED = "added"
    KNOWN = "known"
    """Its event_id is kept, or it is a redelivery of a record already handled."""
    LATE = "late"
    """Older than the fold horizon: the downtimes it belongs with were folded away."""
    FULL = "full"
    """The unit holds `max_unit_records` records that open visits may still need."""


@dataclass(slots=True)
class Progress:
    """A downtime's orders in progress as its alert shows them: how many, and the
    first `ORDERS_LISTED` ids in sorted order."""

    count: int = 0
    listed: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, orders: Iterable[str]) -> Progress:
        every = sorted(set(orders))
        return cls(len(every), every[:ORDERS_LISTED])

    def join(self, order_id: str) -> None:
        self.count += 1
        if len(self.listed) < ORDERS_LISTED or order_id < self.listed[-1]:
            bisect.insort(self.listed, order_id)
            del self.listed[ORDERS_LISTED:]

    def leave(self, order_id: str) -> bool:
        """Take an order out; True if the ids shown must be found again (a listed one
        left while more remain than are listed, or the count went wrong)."""
        self.count -= 1
        if order_id in self.listed:
            self.listed.remove(order_id)
            return self.count > len(self.listed)
        return self.count < len(self.listed)

    def to_json(self) -> list[Any]:
        return [self.count, self.listed]

    @classmethod
    def from_json(cls, data: list[Any]) -> Progress:
        return cls(data[0], data[1])


@dataclass(slots=True)
class UnitSlot:
    unit_id: str
    records: list[DowntimeRecord] = field(default_factory=list)
    """The status records open visits may still need (streams.engine.limits), sorted."""
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_progress: dict[str, list[str]] = field(default_factory=dict)
    """Stored before the orders in progress were derived from the occupancy entries:
    downtime event_id -> its orders then. Only the orders that left the state since
    (their entries were deleted) are kept, until the downtime is folded away."""
    accepted: int = 0
    """Status records ever taken in (folded ones included): the answers' version."""
    floor: tuple[int, str] | None = None
    """(event_time ms, event_id) of the newest record folded away; older ones are refused."""
    clock_ms: int | None = None
    """The largest event_time among the records taken in: the unit's own clock."""
    offset: int | None = None
    """The largest unit-status log offset taken in: tells a redelivery from a late record."""
    progress: dict[str, Progress] | None = field(default_factory=dict)
    """downtime event_id -> its orders in progress (None: a value stored before it was
    kept, derived again at the next record)."""
    inbox: list[int] | None = None
    """[offset, index in its bundle] of the last unit-inbox report counted in `progress`:
    a report at or before it was counted already (a redelivery after a crash)."""
    left: dict[str, Progress] = field(default_factory=dict)
    """downtime event_id -> the orders that left the state counted among its orders in
    progress: part of `progress`, kept apart because no entry counts them when
    `progress` is derived again from the entries (their tombstones do not)."""
    gone: dict[str, None] = field(default_factory=dict)
    """The last `max_unit_left_orders` orders that left, in the order they left (a dict
    for its order and its look-up): a report of one without an entry comes again and
    is skipped (its tombstone was folded away, or it overlapped no downtime and had
    none); an older one's tombstone is deleted."""
    open_left: list[Any] | None = None
    """[count, first ids, latest visit start ms] of the orders that left with a visit
    here that never ended: such a visit overlaps every later downtime, so a downtime
    a later status record opens counts them too (`on_status`)."""
    lost_offset: int | None = None
    """After a crash that lost this value and kept occupancy entries told since: the
    newest unit-status offset the lost steps had taken, as the entries say
    (`OccupancyEntry.told_by`). A record above `offset` and at or below it that the
    unit is too full for is taken all the same (`take`); None once a record at or
    past it is decided, taken or not (`passed_lost_steps`), and in a run without such
    a crash (the value's JSON then as before it)."""

    @property
    def version(self) -> int:
        return self.accepted

    def to_json(self) -> dict[str, Any]:
        return {
            "u": self.unit_id,
            "r": [r.to_json() for r in self.records],
            "a": self.published,
            "ip": self.in_progress,
            "pg": None
            if self.progress is None
            else {event_id: p.to_json() for event_id, p in self.progress.items()},
            "n": self.accepted,
            "fl": None if self.floor is None else list(self.floor),
            "t": self.clock_ms,
            "o": self.offset,
            "ib": self.inbox,
            "lf": {event_id: p.to_json() for event_id, p in self.left.items()},
            "gn": list(self.gone),
            "ol": self.open_left,
        } | ({} if self.lost_offset is None else {"lo": self.lost_offset})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitSlot:
        floor = data.get("fl")
        records = [DowntimeRecord.from_json(r) for r in data["r"]]
        records.sort(key=DowntimeRecord.sort_key)
        clock = data.get("t")
        if clock is None and records:  # a slot stored before the unit had its own clock
            clock = max(to_ms(r.event_time) for r in records)
        return cls(
            data["u"],
            records,
            data["a"],
            data["ip"],
            data.get("n", len(data["r"])),
            None if floor is None else (floor[0], floor[1]),
            clock,
            data.get("o"),
            None
            if data.get("pg") is None
            else {event_id: Progress.from_json(p) for event_id, p in data["pg"].items()},
            data.get("ib"),
            {event_id: Progress.from_json(p) for event_id, p in data.get("lf", {}).items()},
            dict.fromkeys(data.get("gn", [])),
            data.get("ol"),
            data.get("lo"),
        )

    @staticmethod
    def published_of(raw: bytes) -> dict[str, dict[str, Any]]:
        """The alerts a stored unit value published (recovery announces them again)."""
        published: dict[str, dict[str, Any]] = orjson.loads(raw)["a"]
        return published

    def listing(self, event_id: str) -> tuple[list[str], int]:
        """(`orders_in_progress`, `orders_in_progress_count`) of a downtime's alert."""
        kept = (self.progress or {}).get(event_id)
        return ([], 0) if kept is None else (list(kept.listed), kept.count)

    def answer_floor_ms(self) -> int | None:
        """The fold horizon an order is told: downtimes starting at or before it were
        folded away (their alerts are final). Below the start of every downtime still
        kept, so an order retracts, never forgets, an alert about a kept one."""
        if self.floor is None:
            return None
        kept = [to_ms(r.event_time) for r in self.records if r.status != "up"]
        return min(self.floor[0], min(kept) - 1) if kept else self.floor[0]

    def take(
        self,
        record: DowntimeRecord,
        limit: int,
        offset: int | None = None,
    ) -> Taken:
        """Take in a status record, unless known, older than the fold horizon, or full.

        Nothing is folded here (`fold` does, after the record's effects are
        derived). A full unit still takes the `up` that ends its open downtime
        (newer than every kept record), so a unit never stays down because it
        is full: at most `limit + 1` records. It takes one at an `offset` above its
        own and up to `lost_offset` too: steps a crash lost read it, and may have
        taken it (its alert is out); that adds at most the records they read.
        """
        if any(known.event_id == record.event_id for known in self.records):
            return Taken.KNOWN
        key = (to_ms(record.event_time), record.event_id)
        if self.floor is not None and key <= self.floor:
            if offset is not None and self.offset is not None and offset <= self.offset:
                return Taken.KNOWN  # a redelivery of a record folded away since
            return Taken.LATE
        if (
            len(self.records) >= limit
            and not self._read_by_lost_steps(offset)
            and not self._ends_open_downtime(record)
        ):
            return Taken.FULL
        bisect.insort(self.records, record, key=DowntimeRecord.sort_key)
        self.accepted += 1
        self.clock_ms = key[0] if self.clock_ms is None else max(self.clock_ms, key[0])
        if offset is not None:
            self.offset = offset if self.offset is None else max(self.offset, offset)
            if self.lost_offset is not None and self.offset >= self.lost_offset:
                self.lost_offset = None
        return Taken.ADDED

    def _read_by_lost_steps(self, offset: int | None) -> bool:
        """Whether a record at unit-status `offset`, new to this value, was read by
        steps a crash lost (`lost_offset`)."""
        return (
            self.lost_offset is not None
            and offset is not None
            and (self.offset is None or offset > self.offset)
            and offset <= self.lost_offset
        )

    def passed_lost_steps(self, offset: int | None) -> bool:
        """Unmark once a record at unit-status `offset`, at or past `lost_offset`, is
        decided, taken or not (known, late): no later one was read by the lost steps,
        and a mark left in the value would stop a later crash's being set; True if so."""
        if self.lost_offset is None or offset is None or offset < self.lost_offset:
            return False
        self.lost_offset = None
        return True

    def mark_lost_steps(self, entries: Iterable[OccupancyEntry], version: int) -> bool:
        """Mark how far the steps a crash lost read (`lost_offset`) from the `entries`
        told above `version`, the unit's before the record at hand (none is unless a
        crash lost this value and kept them: `OccupancyEntry.told`); True if marked.

        Called at the first record taken or refused since such a crash, before the
        records that come again move the unit's version past what the lost steps told.
        Every record they took that told an order is at or below the newest `told_by`;
        one that told none, and came after, is not known to have been taken.
        """
        if self.lost_offset is not None:
            return False
        newest = max(
            (e.told_by for e in entries
             if e.told is not None and e.told > version and e.told_by is not None),
            default=None,
        )  # fmt: skip
        if newest is None or (self.offset is not None and newest <= self.offset):
            return False
        self.lost_offset = newest
        return True

    def _ends_open_downtime(self, record: DowntimeRecord) -> bool:
        if record.status != "up" or not self.records:
            return False
        newest = self.records[-1]
        return newest.status != "up" and newest.sort_key() < record.sort_key()

    def fold(self, occupancy: Mapping[str, OccupancyEntry], lookback_ms: int) -> bool:
        """Fold away the downtimes no visit can still need; True if anything was folded.

        A downtime goes once it ended `lookback_ms` or more before the unit's
        clock (a visit not reported yet is expected within the lookback) and
        overlaps no visit of an order the unit knows (open or closed, until the
        order is evicted; an open visit overlaps every later downtime). An `up`
        goes with the last downtime it ends. Their alerts leave `published` (the
        version last published is final), and so do their in-progress lists.
        """
        if self.clock_ms is None or not self.records:
            return False
        horizon = self.clock_ms - lookback_ms
        if to_ms(self.records[0].event_time) > horizon:
            return False
        spans = [
            (None if v[2] is None else from_ms(v[2]), None if v[3] is None else from_ms(v[3]))
            for entry in occupancy.values()
            for v in entry.visits
        ]
        keep: set[str] = set()
        pending: list[DowntimeRecord] = []
        for record in self.records:  # sorted: each `up` ends the downtimes open before it
            if record.status != "up":
                pending.append(record)
                continue
            needed = [d for d in pending if to_ms(record.event_time) > horizon or any(
                _downtime(d, record.event_time).overlaps(start, end) for start, end in spans
            )]  # fmt: skip
            keep.update(d.event_id for d in needed)
            if needed or to_ms(record.event_time) > horizon:
                keep.add(record.event_id)
            pending = []
        keep.update(d.event_id for d in pending)  # open downtimes: never folded
        if len(keep) == len(self.records):
            return False
        dropped = [r for r in self.records if r.event_id not in keep]
        self.records = [r for r in self.records if r.event_id in keep]
        newest = max((to_ms(r.event_time), r.event_id) for r in dropped)
        self.floor = newest if self.floor is None else max(self.floor, newest)
        gone = {r.event_id for r in dropped}
        for event_id in gone:
            self.in_progress.pop(event_id, None)
            self.left.pop(event_id, None)
            if self.progress is not None:
                self.progress.pop(event_id, None)
        for alert_id in [
            a for a, body in self.published.items() if body["details"].get("event_id") in gone
        ]:
            del self.published[alert_id]
        return True


def _downtime(record: DowntimeRecord, end: datetime) -> Downtime:
    return Downtime(
        record.unit_id, record.stage, record.status, record.reason, record.event_time, end,
        record.event_id,
    )  # fmt: skip


@dataclass(slots=True)
class OccupancyEntry:
    """An order's visits at one unit, and the last downtime answer sent to it."""

    version: int
    visits: list[list[Any]]
    answered: list[list[Any]] | None = None
    frozen: bool = False
    """The order left the engine's state (evicted): its visits are final, it is
    answered no more, and a report of it that comes again is skipped."""
    at: list[int] | None = None
    """[offset, index in its bundle] of the unit-inbox report that wrote it: after a
    crash, tells that this entry was stored while the unit's value may not have been."""
    gone: bool = False
    """A tombstone (frozen too): the order is counted in `UnitSlot.left`, not by this
    entry, once the unit's value has counted its forget (`left_at`). A frozen entry
    stored before tombstones existed counts its order itself until it is folded away."""
    left_at: list[int] | None = None
    """[offset, index in its bundle] of the forget that made the tombstone."""
    told: int | None = None
    """The unit's version (`UnitSlot.version`) in the last answer it was sent (None:
    never, or stored before it was kept; it never goes back, `UnitProcessor._answer`).
    A status record the unit's value takes in as new gets a version above every
    `told` unless a crash lost the value and kept this entry: the record comes again,
    and the answer it sent may have been lost with the value (`UnitProcessor.on_status`
    sends it again)."""
    told_by: int | None = None
    """The unit-status offset of the record that took the unit to `told` (its newest
    then; None: unknown). After a crash that lost the unit's value, how far the lost
    steps read (`UnitSlot.mark_lost_steps`): a record up to there may have been taken."""

    def to_json(self) -> list[Any]:
        return [self.version, self.visits, self.answered, self.frozen, self.at, self.gone,
                self.left_at, self.told, self.told_by]  # fmt: skip

    @classmethod
    def from_json(cls, data: list[Any]) -> OccupancyEntry:
        frozen = len(data) > 3 and data[3] is True
        return cls(
            data[0], data[1], data[2], frozen, data[4] if len(data) > 4 else None,
            len(data) > 5 and data[5] is True, data[6] if len(data) > 6 else None,
            data[7] if len(data) > 7 else None, data[8] if len(data) > 8 else None,
        )  # fmt: skip

    def told_since(self, version: int) -> bool:
        """Whether it was answered at or after the unit's `version` (see `told`)."""
        return self.told is not None and self.told >= version

    def counts_itself(self, order_id: str, slot: UnitSlot, gone: Container[str]) -> bool:
        """Whether this entry counts its order among the orders in progress, not the
        unit's value (`UnitSlot.left`, whose orders are in `gone`, the slot's `gone`).

        A crash may keep a tombstone and lose the value that counted its forget: the
        tombstone counts its order until the forget comes again. It may keep the
        value and lose the tombstone: the order's entry is then still its report, and
        its order is among those the value counted.
        """
        if not self.frozen:
            return order_id not in gone
        if not self.gone:
            return True  # frozen before tombstones: it counts its order until folded away
        inbox = slot.inbox
        return (
            order_id not in gone
            and self.left_at is not None
            and (inbox is None or self.left_at > inbox)
        )

    def touching(self, spans: Sequence[Span]) -> set[str]:
        """The event_ids of the downtimes its visits overlap."""
        return {d.event_id for d in _overlapping(spans, self.visits)}


@dataclass(slots=True)
class UnitEffects:
    answers: list[DowntimeAnswer] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    changed_entries: dict[str, OccupancyEntry] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    forgotten: set[str] = field(default_factory=set)
    """Orders whose entry is deleted: they left the state and overlap no kept downtime,
    or their tombstone is older than the last `max_unit_left_orders`."""
    changed: bool = False
    """The unit slot changed (a record taken in or folded away, orders in progress): store it."""


Span = tuple[int, int | None, Downtime]
"""A downtime with its start and end (None: still open) in epoch ms."""


def _spans(downtimes: Iterable[Downtime]) -> list[Span]:
    return [(to_ms(d.start), None if d.end is None else to_ms(d.end), d) for d in downtimes]


def _overlapping(spans: Sequence[Span], visits: list[list[Any]]) -> list[Downtime]:
    """The downtimes (in `spans` order) that overlap any of an order's visits at the unit.

    `Downtime.overlaps` (RULES.md) on epoch ms: every instant is at ms precision
    (schemas.common), so the integers compare as the datetimes do, without turning
    each stored visit into datetimes for every downtime and every report.
    """
    touching: list[Downtime] = []
    for start, end, downtime in spans:
        for visit in visits:
            visit_start, visit_end = visit[2], visit[3]
            if visit_start is None:
                visit_start = visit_end  # an unknown start counts as the end
                if visit_start is None:
                    continue  # neither: not a visit
            if (end is None or visit_start < end) and (visit_end is None or start < visit_end):
                touching.append(downtime)
                break
    return touching


class StoredEntries:
    """A unit's stored occupancy entries as a status record reads them (`on_status`);
    `in` tells whether an order has any entry.

    `select(spans, again=, gone=, told_since=)` gives at least the entries a status
    record can answer or count by: every entry not frozen that overlaps a downtime of
    `spans` or was answered with a downtime, and, when the record is `again` (a
    redelivery: every answer is sent again), every one answered at all, else every
    one answered at the unit's version `told_since` or after (its answer is sent
    again, and they say how far steps a crash lost read: `OccupancyEntry.told`,
    `UnitSlot.mark_lost_steps`); every
    frozen entry before tombstones that overlaps one; every tombstone whose order
    is not in `gone` (the slot's: it may count its order, or be a crash's leftover
    to delete). `frozen_outside(spans)` gives at least every frozen entry (a
    tombstone too) whose visits overlap no downtime of `spans`: what a fold may
    delete. Each entry is the same object however often it is asked for.

    The others may be left out: an entry never answered, or answered with no
    downtime, that overlaps no kept downtime is neither answered (nothing to tell
    it) nor counted, and holds no downtime back from the fold; a tombstone the
    unit's value counted (its order in `gone`) counts nothing, and a status record
    deletes it only with a fold. This one gives every entry (the tests' plain
    mappings); `occupancy_index.IndexedEntries` decodes only what the index cannot
    rule out."""

    def __init__(self, entries: Mapping[str, OccupancyEntry]) -> None:
        self._entries = entries

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._entries

    def select(
        self,
        spans: Sequence[Span],
        *,
        again: bool = False,
        gone: Container[str] = (),
        told_since: int | None = None,
    ) -> Mapping[str, OccupancyEntry]:
        return self._entries

    def frozen_outside(self, spans: Sequence[Span]) -> Mapping[str, OccupancyEntry]:
        return self._entries


class UnitProcessor:
    def __init__(self, plan: SlaPlan, limits: EngineLimits | None = None) -> None:
        self.plan = plan
        self.limits = limits or EngineLimits()

    def on_status(
        self,
        slot: UnitSlot,
        record: DowntimeRecord,
        stored: Mapping[str, OccupancyEntry] | StoredEntries,
        now: datetime,
        source: DeadLetterSource,
        raw: bytes | None,
    ) -> UnitEffects:
        """A status record: new downtimes, answers to every order they touch, unit alerts.

        `stored` is the unit's entries, frozen ones included (a mapping: all of
        them). Only the entries that can matter are read (`StoredEntries` says
        which): an entry that overlaps no downtime the unit keeps, and was never
        answered with one, is neither answered nor counted, and holds no downtime
        back from the fold; a tombstone the unit's value counted counts nothing.
        Afterwards the unit folds away what no visit can still need
        (`UnitSlot.fold`), and the frozen entries that overlap no kept downtime
        go; a record it cannot take is a `state_limit` dead letter.
        """
        if not isinstance(stored, StoredEntries):
            stored = StoredEntries(stored)
        limit = self.limits.max_unit_records
        effects = UnitEffects()
        version_before = slot.version
        taken = slot.take(record, limit, source.offset)
        if taken is Taken.FULL:
            taken = self._take_when_full(slot, record, source.offset, stored, effects)
        effects.changed = slot.passed_lost_steps(source.offset) or effects.changed
        if taken in (Taken.LATE, Taken.FULL):
            effects.dead_letters.append(self._refuse(slot, taken, source, raw, now))
            return effects
        # A known event_id changes no fact, but it is re-applied as a whole: on a
        # redelivery after a crash the slot may have been kept while the answers
        # it caused were lost, and every answer is idempotent (versioned).
        redelivered = taken is Taken.KNOWN
        effects.changed = effects.changed or not redelivered
        downtimes = build_downtimes(slot.records)
        if taken is Taken.ADDED and slot.open_left is not None:
            _open_left_join(slot, record.event_id, downtimes)
        spans = _spans(downtimes)
        # A record new to the unit's value comes again too if an entry was told at its
        # version or after: a crash lost the value (and maybe the answers), kept the entry.
        version = slot.version
        occupancy = stored.select(spans, again=redelivered, gone=slot.gone, told_since=version)
        if slot.mark_lost_steps(occupancy.values(), version_before):  # all told above it
            effects.changed = not slot.passed_lost_steps(source.offset) or effects.changed
        members: dict[str, set[str]] = {}
        gone = slot.gone
        for order_id in sorted(occupancy):
            entry = occupancy[order_id]
            touching = _overlapping(spans, entry.visits)
            if entry.counts_itself(order_id, slot, gone):
                for d in touching:
                    members.setdefault(d.event_id, set()).add(order_id)
            elif entry.gone and order_id not in gone:
                effects.forgotten.add(order_id)  # a crash lost its deletion, not the value's
            if not entry.frozen:
                again = redelivered or entry.told_since(version)
                self._answer(slot, order_id, entry, touching, effects, again=again)
        if slot.in_progress:  # a stored list: only the orders without an entry stay in it
            kept = {d.event_id for d in downtimes}
            left = {
                event_id: [o for o in orders if o not in stored]
                for event_id, orders in slot.in_progress.items()
                if event_id in kept
            }
            left = {event_id: o for event_id, o in left.items() if o}
            effects.changed = effects.changed or left != slot.in_progress
            slot.in_progress = left
        before = slot.progress
        slot.progress = _progress(slot, downtimes, members)
        effects.changed = effects.changed or before != slot.progress
        # Only the alerts this record can change are derived again: its own downtime,
        # the downtimes it ends (an `up`), and those whose orders in progress changed.
        at = record.event_time
        affected = {
            d.event_id
            for d in downtimes
            if d.event_id == record.event_id or (d.start <= at and (d.end is None or d.end >= at))
        }
        for body in slot.published.values():
            event_id = body["details"].get("event_id")
            if event_id not in affected and _listing(body) != slot.listing(event_id):
                affected.add(event_id)
        effects.alerts = self._alerts(slot, downtimes, now, affected)
        # Folded only now: a record older than the horizon still gets its alert, final.
        if self._fold(slot, occupancy, stored, effects):
            effects.changed = True
        return effects

    def _take_when_full(
        self,
        slot: UnitSlot,
        record: DowntimeRecord,
        offset: int | None,
        stored: StoredEntries,
        effects: UnitEffects,
    ) -> Taken:
        """Take a record the full unit refused if a fold makes room, or if steps a crash
        lost read it (`UnitSlot.mark_lost_steps`: the entries told above the unit's
        version are read for it, none in a run without such a crash)."""
        limit, version = self.limits.max_unit_records, slot.version
        spans = _spans(build_downtimes(slot.records))
        held = stored.select(spans, gone=slot.gone, told_since=version + 1)
        if self._fold(slot, held, stored, effects):
            effects.changed = True  # an order left since the last record: room again?
            taken = slot.take(record, limit, offset)
            if taken is not Taken.FULL:
                return taken
        if not slot.mark_lost_steps(held.values(), version):
            return Taken.FULL
        # The steps may have taken it: the entries' visits may have changed since and
        # hold back the fold that made room then. Refused, the unit would forget a
        # downtime whose alert is out (never resolved) and that orders were told of.
        effects.changed = True
        return slot.take(record, limit, offset)

    def _fold(
        self,
        slot: UnitSlot,
        occupancy: Mapping[str, OccupancyEntry],
        stored: StoredEntries,
        effects: UnitEffects,
    ) -> bool:
        """Fold by the visits of the orders still in the state (`occupancy`'s entries not
        frozen: a frozen entry's downtimes need not be kept for it, their alerts' last
        version is final); the frozen entries that overlap no kept downtime go with it,
        except a tombstone the unit's value has not counted (a crash lost it): the
        forget that comes again counts its order from it (a visit that never ended
        counts in later downtimes)."""
        known = {order_id: e for order_id, e in occupancy.items() if not e.frozen}
        if not slot.fold(known, self.limits.unit_lookback_ms):
            return False
        kept_spans = _spans(build_downtimes(slot.records))
        for order_id, entry in stored.frozen_outside(kept_spans).items():
            if (
                entry.frozen
                and not entry.touching(kept_spans)
                and not (entry.gone and entry.counts_itself(order_id, slot, slot.gone))
            ):
                effects.forgotten.add(order_id)
        return True

    def _refuse(
        self,
        slot: UnitSlot,
        taken: Taken,
        source: DeadLetterSource,
        raw: bytes | None,
        now: datetime,
    ) -> DeadLetter:
        if taken is Taken.LATE:
            msg = (
                "older than the unit's fold horizon: the downtimes it belongs with ended "
                "before every visit the unit may still be asked about, and were folded away"
            )
        else:
            msg = (
                f"the unit already holds {self.limits.max_unit_records} status records "
                "that visits may still need (the most the engine keeps per unit)"
            )
        return DeadLetter.build(
            raw, source, [ErrorDetail(loc="unit_id", msg=msg, type=ReasonCode.STATE_LIMIT.value)],
            ReasonCode.STATE_LIMIT, now, key=slot.unit_id.encode(),
        )  # fmt: skip

    def on_occupancies(
        self,
        slot: UnitSlot,
        messages: Sequence[Occupancy],
        entries: Mapping[str, OccupancyEntry | None],
        now: datetime,
        every_entry: Callable[[], Mapping[str, OccupancyEntry]],
        positions: Sequence[Sequence[int]] | None = None,
    ) -> UnitEffects:
        """A batch of the orders' reports to this unit, applied in their log order.

        Each report updates the order's entry, and answers the order if its
        downtimes changed (only the last answer per order is kept: answers are
        versioned and each is whole). The alerts of the downtimes whose orders in
        progress changed are derived once, after the batch, from `every_entry()`
        (the unit's stored entries) updated by the batch: a report changes only
        their `orders_in_progress`, so one version per batch ends where one per
        report would (CONTRACT v1.2 publishes the changes of a batch, not each
        intermediate state). A `forget` (the order left the state) makes its entry a
        tombstone while a downtime it overlaps is kept or its visit never ended, else
        deletes it (`_leave`). A report that
        comes again (a redelivery after a crash) derives its downtimes' alerts
        again: the alerts may not have been sent before the crash. `positions` are the
        reports' [offset, index in bundle] in the unit inbox: with them the counts stay
        exact across a crash that stored the entries and not the unit's value, or the
        other way round (each report is counted once: the unit keeps the last position
        counted, each entry the position that wrote it).
        `entries` holds the stored entry of every order in `messages` (None: none).
        """
        effects = UnitEffects()
        current = dict(entries)
        downtimes = build_downtimes(slot.records)
        spans = _spans(downtimes)
        changed_progress: set[str] = set()
        found_again: set[str] = set()
        """Downtimes whose orders must be found again in every entry."""
        progress = slot.progress
        if progress is None:  # stored before it was kept
            progress = slot.progress = {}
            found_again.update(d.event_id for d in downtimes)
        before = {event_id: p.to_json() for event_id, p in progress.items()}
        left_before = ({event_id: p.to_json() for event_id, p in slot.left.items()},
                       list(slot.gone))  # fmt: skip
        counted = None if slot.inbox is None else tuple(slot.inbox)
        for n, message in enumerate(messages):
            at = None if positions is None else list(positions[n])
            order_id = message.order_id
            entry = current.get(order_id)
            was = set() if entry is None else entry.touching(spans)
            if message.forget:
                if entry is not None:
                    seen = at is not None and counted is not None and tuple(at) <= counted
                    self._leave(slot, order_id, entry, was, at, seen, current, effects)
                continue
            if entry is not None and (entry.frozen or message.version < entry.version):
                continue  # overtaken by a newer report of the same order, or it left
            if entry is None and order_id in slot.gone:
                continue  # it left, and its tombstone went (or it never had one)
            # the same version again is a redelivery (or a rejoin): re-applied, answer re-sent
            again = entry is not None and message.version == entry.version
            stored_alone = again and at is not None and entry is not None and entry.at == at
            answered = entry.answered if entry else None
            told, told_by = (entry.told, entry.told_by) if entry else (None, None)
            entry = OccupancyEntry(message.version, message.visits, answered, at=at, told=told,
                                   told_by=told_by)  # fmt: skip
            current[order_id] = entry
            effects.forgotten.discard(order_id)
            touching = _overlapping(spans, entry.visits)
            touched = {d.event_id for d in touching}
            if again:  # its downtimes' alerts derived again (they may not have been sent)
                changed_progress.update(touched)
            if at is not None and counted is not None and tuple(at) <= counted:
                pass  # counted before a crash that lost the entry, not the unit's value
            elif stored_alone:  # the entry was stored, the unit's value lost: what the
                # order's visits were before this report is unknown, so count again
                found_again.update(touched, progress)
            else:
                found_again.update(_moved(progress, order_id, was, touched))
                changed_progress.update(was ^ touched)
            self._answer(slot, order_id, entry, touching, effects, again=again)
            effects.changed_entries[order_id] = entry
        if len(effects.answers) > 1:
            effects.answers = list({a.order_id: a for a in effects.answers}.values())
        if positions:
            last = max(tuple(p) for p in positions)
            slot.inbox = list(last) if counted is None else list(max(last, counted))
        if found_again:
            _find_again(slot, downtimes, found_again, {**every_entry(), **current})
        if changed_progress:
            effects.alerts = self._alerts(slot, downtimes, now, changed_progress)
        after = slot.progress or {}
        left_after = ({event_id: p.to_json() for event_id, p in slot.left.items()},
                      list(slot.gone))  # fmt: skip
        effects.changed = (
            bool(effects.alerts)
            or before != {event_id: p.to_json() for event_id, p in after.items()}
            or left_before != left_after
        )
        return effects

    def _leave(
        self,
        slot: UnitSlot,
        order_id: str,
        entry: OccupancyEntry,
        was: set[str],
        at: list[int] | None,
        seen: bool,
        current: dict[str, OccupancyEntry | None],
        effects: UnitEffects,
    ) -> None:
        """An order left the state (a `forget` at inbox position `at`; `seen`: the unit's
        value counted it before a crash): it moves from its entry into the counts of
        the orders that left (`UnitSlot.left`) of the kept downtimes its final visits
        overlap, so no total changes, and its entry becomes a tombstone.

        A forget that comes again finds the tombstone and changes nothing (a forget
        of an order without an entry never counts), unless the tombstone was stored
        by this very forget and the unit's value lost in a crash: then it is counted
        now. If the value was stored and the entry lost, the tombstone is made again
        without counting, or the entry deleted if the value deleted its tombstone since.
        """
        if entry.frozen:
            if (
                entry.gone
                and entry.left_at == at
                and entry.counts_itself(order_id, slot, slot.gone)
            ):
                self._count_left(slot, order_id, entry.visits, was, current, effects)
            return  # it left before (a frozen entry stored before tombstones: counted by it)
        counted = order_id in slot.gone  # the value counted it, a crash lost the tombstone
        if (not was and not _open_starts(entry.visits)) or (seen and not counted):
            current[order_id] = None  # overlaps no downtime, or its tombstone was deleted
            effects.changed_entries.pop(order_id, None)
            effects.forgotten.add(order_id)
            if not seen and not counted:  # a report of it that comes again is skipped
                self._remember(slot, order_id, current, effects)
            return
        tombstone = OccupancyEntry(entry.version, entry.visits, entry.answered, True, entry.at,
                                   gone=True, left_at=at)  # fmt: skip
        current[order_id] = effects.changed_entries[order_id] = tombstone
        if not seen and not counted:
            self._count_left(slot, order_id, entry.visits, was, current, effects)

    def _count_left(
        self,
        slot: UnitSlot,
        order_id: str,
        visits: list[list[Any]],
        was: set[str],
        current: dict[str, OccupancyEntry | None],
        effects: UnitEffects,
    ) -> None:
        """Count a leaving order among the orders that left its downtimes, and keep its
        tombstone among the last `max_unit_left_orders`: an older one's is deleted."""
        for event_id in sorted(was):
            slot.left.setdefault(event_id, Progress()).join(order_id)
        starts = _open_starts(visits)
        if starts:  # a visit that never ended: counted in later downtimes too
            known = slot.open_left
            ids = Progress() if known is None else Progress(known[0], list(known[1]))
            ids.join(order_id)
            latest = max(starts) if known is None else max(known[2], *starts)
            slot.open_left = [ids.count, ids.listed, latest]
        self._remember(slot, order_id, current, effects)

    def _remember(
        self,
        slot: UnitSlot,
        order_id: str,
        current: dict[str, OccupancyEntry | None],
        effects: UnitEffects,
    ) -> None:
        """Keep a leaving order among the last `max_unit_left_orders` that left; an older
        one's tombstone, if it still has one, is deleted."""
        slot.gone[order_id] = None
        excess = len(slot.gone) - self.limits.max_unit_left_orders
        for old in list(islice(slot.gone, max(excess, 0))):
            del slot.gone[old]
            current[old] = None
            effects.changed_entries.pop(old, None)
            effects.forgotten.add(old)

    def _answer(
        self,
        slot: UnitSlot,
        order_id: str,
        entry: OccupancyEntry,
        touching: list[Downtime],
        effects: UnitEffects,
        *,
        again: bool = False,
    ) -> None:
        body = [downtime_to_json(d) for d in touching]
        if entry.answered is None and not body:
            return
        if entry.answered == body and not again:
            return
        # Never below the version the order was told at: a crash that lost the unit's
        # value and kept the entry may leave the unit's version lower once the records
        # that come again are taken differently (a fold by entries that are ahead refuses
        # one), and an order ignores an answer older than the one it holds.
        version = slot.version if entry.told is None else max(slot.version, entry.told)
        if version != entry.told:  # else the record that took the unit there is kept
            entry.told_by = slot.offset if version == slot.version else None
        entry.answered = body
        entry.told = version
        effects.changed_entries[order_id] = entry
        effects.answers.append(
            DowntimeAnswer(
                order_id, slot.unit_id, (version, entry.version), body, slot.answer_floor_ms()
            )
        )

    def _alerts(
        self,
        slot: UnitSlot,
        downtimes: list[Downtime],
        now: datetime,
        affected: set[str],
    ) -> list[dict[str, Any]]:
        """The changes among the alerts of the `affected` downtimes (by event_id)."""
        chosen = [d for d in downtimes if d.event_id in affected]
        desired: dict[str, dict[str, Any]] = {}
        for key, alert in evaluate_unit(slot.unit_id, chosen, self.plan, now).items():
            body = alert_json(alert)
            details = body["details"]
            event_id = details.get("event_id")
            listed, count = slot.listing(event_id)
            details["orders_in_progress"], details["orders_in_progress_count"] = listed, count
            desired[key] = body
        mine = [
            key
            for key, have in slot.published.items()
            if have["details"].get("event_id") in affected
        ]
        changes, _ = alert_changes(slot.published, desired, among=mine)
        for body in changes:
            slot.published[body["alert_id"]] = body
        return changes


def _open_starts(visits: list[list[Any]]) -> list[int]:
    """The starts (ms) of the visits that never ended (each overlaps every later downtime)."""
    return [v[2] for v in visits if v[2] is not None and v[3] is None]


def _open_left_join(slot: UnitSlot, event_id: str, downtimes: Sequence[Downtime]) -> None:
    """A downtime a status record opens counts the orders that left with a visit here
    that never ended (the reference engine, which lets no order go, counts them in
    every downtime after their visit started); a late record whose downtime ended
    before the latest such visit started counts none of them."""
    assert slot.open_left is not None
    count, listed, latest_ms = slot.open_left
    for d in downtimes:
        if d.event_id == event_id and (d.end is None or to_ms(d.end) > latest_ms):
            slot.left[event_id] = Progress(count, list(listed))


def _moved(
    progress: dict[str, Progress], order_id: str, was: set[str], touched: set[str]
) -> set[str]:
    """An order's visits moved from the downtimes `was` to `touched`: the counts and ids
    brought up to date; returns the downtimes whose ids must be found again."""
    again: set[str] = set()
    for event_id in touched - was:
        progress.setdefault(event_id, Progress()).join(order_id)
    for event_id in was - touched:
        kept = progress.get(event_id)
        if kept is None or kept.leave(order_id):
            again.add(event_id)
        elif kept.count == 0:
            del progress[event_id]
    return again


def _find_again(
    slot: UnitSlot,
    downtimes: Sequence[Downtime],
    chosen: set[str],
    entries: Mapping[str, OccupancyEntry | None],
) -> None:
    """The `chosen` downtimes' orders in progress, derived from every entry again."""
    spans = _spans(downtimes)
    members: dict[str, set[str]] = {}
    gone = slot.gone
    for order_id, entry in entries.items():
        if entry is not None and entry.counts_itself(order_id, slot, gone):
            for event_id in entry.touching(spans) & chosen:
                members.setdefault(event_id, set()).add(order_id)
    if slot.in_progress:  # a stored whole list: its orders with an entry are counted by it
        pruned = {
            event_id: [o for o in orders if entries.get(o) is None]
            for event_id, orders in slot.in_progress.items()
        }
        slot.in_progress = {event_id: orders for event_id, orders in pruned.items() if orders}
    progress = slot.progress if slot.progress is not None else {}
    for event_id in chosen:
        progress.pop(event_id, None)
    progress.update(_progress(slot, [d for d in downtimes if d.event_id in chosen], members))
    slot.progress = progress


def _progress(
    slot: UnitSlot, downtimes: Iterable[Downtime], members: Mapping[str, set[str]]
) -> dict[str, Progress]:
    """Each downtime's orders in progress: the entries that count their order and
    overlap it, the orders of a list stored before `Progress` that have no entry, and
    the orders that left the state (`UnitSlot.left`: counted, their first ids listed)."""
    found: dict[str, Progress] = {}
    for d in downtimes:
        orders = members.get(d.event_id, set()).union(slot.in_progress.get(d.event_id, ()))
        left = slot.left.get(d.event_id)
        if left is not None:  # an order named in both (a crash's leftover) counts once
            every = orders.union(left.listed)
            count = len(every) + left.count - len(left.listed)
            found[d.event_id] = Progress(count, sorted(every)[:ORDERS_LISTED])
        elif orders:
            found[d.event_id] = Progress.of(orders)
    return found


def _listing(body: Mapping[str, Any]) -> tuple[Any, Any]:
    """A published unit alert's (`orders_in_progress`, `orders_in_progress_count`)."""
    details = body["details"]
    return details.get("orders_in_progress"), details.get("orders_in_progress_count")
