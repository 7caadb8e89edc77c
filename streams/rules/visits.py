"""The visits walk of RULES.md ("Visits"): sorted scans -> visits and findings.

The walk is a small state machine over the order's scans sorted by
(`event_time`, `event_id`), so its result depends only on the set of scans: a
late-arriving scan simply re-runs the walk. It also records the ETA after each
scan, because `order_at_risk` is defined on the ETA *at* each scan, not on the
latest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter

from schemas.plan import SlaPlan
from streams.rules.facts import ScanFact

MISSING_SCAN = "missing_scan"
OUT_OF_SEQUENCE = "out_of_sequence"

_SCAN_ORDER = attrgetter("event_time", "event_id")
"""`ScanFact.sort_key` without a Python call per scan."""


@dataclass(slots=True)
class Visit:
    """One pass through one stage; `start` is None when only its end was scanned."""

    stage: str
    number: int
    unit_id: str
    start: datetime | None
    opened_seq: int
    """Walk position of the scan that opened it: orders visits for handoffs."""
    end: datetime | None = None
    ended_seq: int | None = None
    outcome: str | None = None  # completed | rejected
    quantity: float | None = None
    uom: str | None = None


# Not frozen: built afresh on every derivation of an order, and a frozen
# dataclass's __init__ costs about four times a plain one. Never mutated.
@dataclass(slots=True)
class Finding:
    """A `missing_scan` (stage = the missing stage) or `out_of_sequence` (the scan's)."""

    kind: str
    stage: str
    scan: ScanFact


# Not frozen: built afresh on every derivation of an order, and a frozen
# dataclass's __init__ costs about four times a plain one. Never mutated.
@dataclass(slots=True)
class QuantityLoss:
    visit: Visit
    scan: ScanFact
    previous: float


@dataclass(slots=True)
class Walk:
    visits: list[Visit] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    losses: list[QuantityLoss] = field(default_factory=list)
    etas: list[tuple[ScanFact, datetime]] = field(default_factory=list)
    """(scan, ETA after applying it) for every scan of the walk."""
    first_scan_at: datetime | None = None
    completed_at: datetime | None = None
    current: Visit | None = None
    """The open visit, if any (a visit abandoned by a skip is not current)."""
    expected: str | None = None
    """The expected stage, None once past the end of the route."""


def remaining_budget(route: Sequence[str], plan: SlaPlan, product: str | None) -> list[timedelta]:
    """tail[j] = sum of handoff + duration over route[j:], so an ETA is one addition."""
    tail = [timedelta(0)] * (len(route) + 1)
    for j in range(len(route) - 1, -1, -1):
        tail[j] = tail[j + 1] + plan.handoff + plan.duration(route[j], product)
    return tail


@dataclass(frozen=True, slots=True)
class RouteBudget:
    """What every walk of one (route, product) under one plan looks up."""

    index: dict[str, int]
    """stage -> position on the route"""
    tail: list[timedelta]
    """`remaining_budget` of the route"""
    duration: dict[str, timedelta]
    """stage -> the product's budget of a visit (`plan.duration`)"""
    rework: int | None
    """position of the plan's rework stage on the route"""


_BUDGETS: dict[tuple[int, tuple[str, ...], str | None], tuple[SlaPlan, RouteBudget]] = {}
_BUDGETS_MAX = 10_000


def route_budget(route: Sequence[str], plan: SlaPlan, product: str | None) -> RouteBudget:
    """The `RouteBudget` of a route, memoised: an order is walked again on every change,
    and rebuilding these (through the plan's private memo) cost a tenth of a walk.

    Keyed by the plan's identity; the plan is kept with the entry, so a key is never
    reused by another plan while the entry lives.
    """
    key = (id(plan), route if isinstance(route, tuple) else tuple(route), product)
    hit = _BUDGETS.get(key)
    if hit is not None and hit[0] is plan:
        return hit[1]
    if len(_BUDGETS) >= _BUDGETS_MAX:
        _BUDGETS.clear()
    index = {stage: i for i, stage in enumerate(route)}
    budget = RouteBudget(
        index=index,
        tail=remaining_budget(route, plan, product),
        duration={stage: plan.duration(stage, product) for stage in route},
        rework=index.get(plan.rework_stage),
    )
    _BUDGETS[key] = (plan, budget)
    return budget


class _Walker:
    """Mutable state of one walk; kept in a class so each rule reads like RULES.md."""

    def __init__(self, route: Sequence[str], plan: SlaPlan, product: str | None) -> None:
        budget = route_budget(route, plan, product)
        self.route = route
        self.index = budget.index
        self.plan = plan
        self.product = product
        self.tail = budget.tail
        self.duration = budget.duration
        self.rework = budget.rework
        self.tolerance = 1.0 - plan.quantity_loss_tolerance
        self.expected = 0
        self.open: Visit | None = None
        self.counters: dict[str, int] = {}
        self.last_quantity: dict[str, float] = {}
        self.out = Walk()

    def walk(self, ordered: Sequence[ScanFact]) -> None:
        """Apply the scans in (event_time, event_id) order, each with the ETA after it
        (one loop, not a call per scan: every derivation walks every scan again)."""
        out, index, duration, tail, qc_stage = (
            self.out, self.index, self.duration, self.tail, self.plan.qc_stage
        )  # fmt: skip
        etas = out.etas
        for seq, scan in enumerate(ordered):
            stage = scan.stage
            i = index[stage]
            if out.completed_at is not None:
                self._finding(OUT_OF_SEQUENCE, stage, scan)
            elif scan.action == "started":
                self._started(seq, scan, i)
            elif scan.action == "rejected" and stage != qc_stage:
                self._finding(OUT_OF_SEQUENCE, stage, scan)
            else:
                self._ended(seq, scan, i)
            t = scan.event_time
            visit = self.open
            if visit is not None and visit.start is not None:
                busy_until = visit.start + duration[visit.stage]
                eta = (busy_until if busy_until >= t else t) + tail[index[visit.stage] + 1]
            else:
                eta = t + tail[self.expected]
            etas.append((scan, eta))

    def _started(self, seq: int, scan: ScanFact, i: int) -> None:
        if self.open is not None and self.open.stage == scan.stage:
            return  # duplicate start
        if i < self.expected:
            self._finding(OUT_OF_SEQUENCE, scan.stage, scan)
            return
        # The open visit (if any) is of the expected stage: its own end is reported
        # through stage_overdue, so only the stages strictly between are missing.
        first_missing = self.expected + 1 if self.open is not None else self.expected
        for stage in self.route[first_missing:i]:
            self._finding(MISSING_SCAN, stage, scan)
        self.open = self._new_visit(seq, scan, scan.event_time)
        self.expected = i

    def _ended(self, seq: int, scan: ScanFact, i: int) -> None:
        visit = self.open
        if visit is not None:
            if visit.stage != scan.stage:
                self._finding(OUT_OF_SEQUENCE, scan.stage, scan)
                return
        elif i >= self.expected:
            for stage in self.route[self.expected : i + 1]:
                self._finding(MISSING_SCAN, stage, scan)
            visit = self._new_visit(seq, scan, None)
        else:
            self._finding(OUT_OF_SEQUENCE, scan.stage, scan)
            return
        visit.end = scan.event_time
        visit.ended_seq = seq
        visit.outcome = scan.action
        if scan.quantity is not None:
            visit.quantity, visit.uom = scan.quantity, scan.uom
        self.open = None
        if scan.action == "rejected":
            self.expected = self.rework if self.rework is not None else i
            return
        self._check_quantity(visit, scan)
        self.expected = i + 1
        if self.expected == len(self.route):
            self.out.completed_at = scan.event_time

    def _check_quantity(self, visit: Visit, scan: ScanFact) -> None:
        if scan.quantity is None or scan.uom is None:
            return
        previous = self.last_quantity.get(scan.uom)
        if previous is not None and scan.quantity < previous * self.tolerance:
            self.out.losses.append(QuantityLoss(visit, scan, previous))
        self.last_quantity[scan.uom] = scan.quantity

    def _new_visit(self, seq: int, scan: ScanFact, start: datetime | None) -> Visit:
        number = self.counters.get(scan.stage, 0) + 1
        self.counters[scan.stage] = number
        visit = Visit(scan.stage, number, scan.unit_id, start, seq)
        self.out.visits.append(visit)
        return visit

    def _finding(self, kind: str, stage: str, scan: ScanFact) -> None:
        self.out.findings.append(Finding(kind, stage, scan))

    def result(self) -> Walk:
        self.out.current = self.open
        done = self.expected >= len(self.route)
        self.out.expected = None if done else self.route[self.expected]
        return self.out


def walk_visits(
    scans: Sequence[ScanFact], route: Sequence[str], plan: SlaPlan, product: str | None
) -> Walk:
    """Walk scans whose stages are all on `route` (off-route scans are dead letters)."""
    walker = _Walker(route, plan, product)
    ordered = sorted(scans, key=_SCAN_ORDER)
    walker.walk(ordered)
    walk = walker.result()
    walk.first_scan_at = ordered[0].event_time if ordered else None
    return walk
