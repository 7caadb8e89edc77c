"""One order's life as records: created, scanned through its route, maybe updated or cancelled.

Each order draws from its own `random.Random` seeded by (seed, order number),
so an order's records do not depend on how the merge interleaves it with the
others. The plan (durations, handoff, start_within, QC and rework stages)
shapes every timing: ordinary visits use 45-92 % of their budget and
handoffs a few hours; the injected anomalies (config.ORDER_FATES) push one
timing past its budget, drop or add a scan, or change the order record.
Visits at a unit that breaks down are stretched by the downtime (`degraded`
by half of it), the way a real queue would be.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from schemas.plan import SlaPlan
from schemas.topics import ORDERS, SCANS
from simulator.config import ORDER_FATES, SimConfig
from simulator.records import (
    MS_PER_DAY,
    MS_PER_H,
    MS_PER_MIN,
    MS_PER_S,
    SimRecord,
    dumps,
    format_ms,
)
from simulator.world import (
    PRODUCTS,
    Customer,
    UnitSchedule,
    new_event_id,
    stage_offset,
)


@dataclass(frozen=True, slots=True)
class OrderContext:
    """What every order of a run shares (read-only)."""

    cfg: SimConfig
    plan: SlaPlan
    units: dict[str, tuple[str, ...]]
    schedule: UnitSchedule
    customers: tuple[Customer, ...]


@dataclass(frozen=True, slots=True)
class _Step:
    stage: str
    end_action: str
    rework: bool


def _sec(ms: float) -> int:
    return int(ms) // MS_PER_S * MS_PER_S


def _ms(td_seconds: float) -> int:
    return int(td_seconds * MS_PER_S)


class _Order:
    """Builds the records of one order; `build()` returns them sorted by publication time."""

    def __init__(self, ctx: OrderContext, number: int, placed_ms: int) -> None:
        self.ctx = ctx
        self.plan = ctx.plan
        self.rng = random.Random(f"{ctx.cfg.seed}:order:{number}")
        self.order_id = f"{ctx.cfg.id_prefix}PO-{number:06d}"
        self.placed_ms = placed_ms
        self.records: list[tuple[int, int, SimRecord]] = []
        self.prev_qty: dict[str, float] = {}
        self.pending_labels: list[str] = []

    # --- output -----------------------------------------------------------

    def _add(self, topic: str, value: dict[str, Any], at_ms: int, label: str | None) -> None:
        record = SimRecord(topic, self.order_id, dumps(value), at_ms, label)
        self.records.append((at_ms, len(self.records), record))

    def _scan(
        self,
        stage: str,
        action: str,
        unit: str,
        ms: int,
        label: str | None = None,
        quantity: float | None = None,
        uom: str | None = None,
    ) -> None:
        rng = self.rng
        value: dict[str, Any] = {
            "event_id": new_event_id(rng),
            "order_id": self.order_id,
            "stage": stage,
            "action": action,
            "unit_id": unit,
            "event_time": format_ms(ms, stage_offset(stage)),
        }
        if quantity is not None:
            value["quantity"] = quantity
            value["uom"] = uom
            value["lot_id"] = f"LOT-{rng.randrange(10_000, 99_999)}"
        if action == "rejected":
            value["attributes"] = {"defect": rng.choice(("seam", "shade", "size", "pilling"))}
        elif stage == "dyeing" and action == "completed":
            value["attributes"] = {"shade": rng.choice(("navy", "oat", "charcoal", "forest"))}
        if label is None and self.pending_labels:
            label = self.pending_labels.pop(0)
        self._add(SCANS, value, ms, label)
        if rng.random() < self.ctx.cfg.anomalies.duplicate:
            self._duplicate(value, ms)

    def _duplicate(self, value: dict[str, Any], ms: int) -> None:
        """The same `event_id` re-sent later; a third of the time with a changed payload."""
        rng = self.rng
        at = _sec(ms + rng.uniform(1, 45) * MS_PER_MIN)
        copy = dict(value)
        label = "duplicate"
        if rng.random() < 1 / 3:
            label = "duplicate_changed"
            if "quantity" in copy:
                copy["quantity"] = int(float(copy["quantity"]) * 0.9)
            else:
                shifted = _sec(ms + rng.uniform(1, 20) * MS_PER_MIN)
                copy["event_time"] = format_ms(shifted, stage_offset(str(copy["stage"])))
        self._add(SCANS, copy, at, label)

    # --- the order ----------------------------------------------------------

    def build(self) -> list[SimRecord]:
        rng, plan = self.rng, self.plan
        rates = self.ctx.cfg.anomalies
        fates = {fate for fate in ORDER_FATES if rng.random() < getattr(rates, fate)}
        if "overdue" in fates:
            fates.discard("tight_due")
        if "cancel" in fates:
            fates.discard("stall")
        customer = rng.choice(self.ctx.customers)
        product, weight = rng.choice(PRODUCTS)
        quantity = rng.randrange(100, 2001, 10)
        self.weight = weight
        self.quantity = quantity
        self.product = product

        route = plan.route
        handoff_ms = _ms(plan.handoff.total_seconds())
        budget = sum(_ms(plan.duration(s, product).total_seconds()) for s in route)
        budget += handoff_ms * (len(route) - 1)
        due_label = None
        if "overdue" in fates:
            due = self.placed_ms + budget * rng.uniform(0.35, 0.5)
            due_label = "overdue"
        elif "tight_due" in fates:
            due = self.placed_ms + budget * rng.uniform(0.75, 0.95)
            due_label = "tight_due"
        else:
            margin = _ms(plan.at_risk_margin(customer.tier).total_seconds())
            start_within = _ms(plan.start_within.total_seconds())
            due = self.placed_ms + start_within + budget + margin
            due += rng.uniform(1, 4) * MS_PER_DAY
        due_ms = -(-int(due) // MS_PER_H) * MS_PER_H
        created: dict[str, Any] = {
            "op": "created",
            "order_id": self.order_id,
            "customer_id": customer.customer_id,
            "product": product,
            "quantity": quantity,
            "placed_at": format_ms(self.placed_ms),
            "due_at": format_ms(due_ms),
        }
        if rng.random() < 0.3:
            created["route"] = list(route)
        self._add(ORDERS, created, self.placed_ms, due_label)
        self._walk(self._steps("qc_rejection" in fates), fates, due_ms)
        self.records.sort(key=lambda item: (item[0], item[1]))
        return [record for _, _, record in self.records]

    def _steps(self, reject: bool) -> list[_Step]:
        plan, route = self.plan, self.plan.route
        qi, ri = route.index(plan.qc_stage), route.index(plan.rework_stage)
        steps: list[_Step] = []
        for i, stage in enumerate(route):
            if i == qi and reject:
                for _ in range(2 if self.rng.random() < 0.15 else 1):
                    steps.append(_Step(stage, "rejected", bool(steps and steps[-1].rework)))
                    steps.extend(_Step(s, "completed", True) for s in route[ri:qi])
            steps.append(_Step(stage, "completed", False))
        return steps

    def _walk(  # noqa: C901 - one pass whose draws fix the seeded output; kept in order
        self, steps: list[_Step], fates: set[str], due_ms: int
    ) -> None:
        rng, plan, ctx = self.rng, self.plan, self.ctx
        route = plan.route
        n = len(steps)

        def pick(lo: int, hi: int, fate: str) -> int:
            return rng.randrange(lo, hi) if fate in fates and hi > lo else -1

        forward = [j for j, s in enumerate(steps) if not s.rework and s.end_action == "completed"]
        late_j = pick(0, n, "late_stage")
        handoff_j = pick(1, n, "missed_handoff")
        stall_j = pick(1, n, "stall")
        cancel_j = pick(1, n, "cancel")
        update_j = pick(0, n, "update")
        loss_from = pick(1, n, "quantity_loss")
        skippable = [
            j for j in forward[1:-1] if steps[j].stage not in (plan.qc_stage, plan.rework_stage)
        ]
        skip_j, skip_whole = -1, False
        if "missing_scan" in fates and skippable:
            skip_j, skip_whole = rng.choice(skippable), rng.random() < 0.6
        stray_j, stray_after = -1, False
        if "out_of_sequence" in fates:
            candidates = [j for j in forward if route.index(steps[j].stage) >= 2]
            stray_after = rng.random() < 0.4 and stall_j < 0 and cancel_j < 0
            if not stray_after and candidates:
                stray_j = rng.choice(candidates)
        knit = route.index("knitting") if "knitting" in route else min(2, len(route) - 1)

        first = rng.uniform(1, 20) * MS_PER_H
        if "late_start" in fates:
            first = plan.start_within.total_seconds() * MS_PER_S + rng.uniform(1, 36) * MS_PER_H
            self.pending_labels.append("late_start")
        t = _sec(self.placed_ms + first)
        prev_end = self.placed_ms
        for j, step in enumerate(steps):
            if j > 0:
                gap = rng.triangular(0.5, 9, 2) * MS_PER_H
                if j == handoff_j:
                    gap = plan.handoff.total_seconds() * MS_PER_S + rng.uniform(0.5, 24) * MS_PER_H
                    self.pending_labels.append("missed_handoff")
                t = _sec(prev_end + gap)
            if j == update_j:
                self._update(_sec(prev_end + (t - prev_end) * rng.uniform(0.1, 0.9)), due_ms)
            if j == cancel_j:
                cancelled_at = _sec(prev_end + (t - prev_end) * rng.uniform(0.1, 0.9))
                self._add(
                    ORDERS,
                    {
                        "op": "cancelled",
                        "order_id": self.order_id,
                        "event_time": format_ms(cancelled_at),
                    },
                    cancelled_at,
                    "order_cancelled",
                )
                return
            unit = rng.choice(ctx.units[step.stage])
            budget = plan.duration(step.stage, self.product).total_seconds() * MS_PER_S
            frac = (
                rng.triangular(0.15, 0.5, 0.3) if step.rework else rng.triangular(0.45, 0.92, 0.7)
            )
            late = j == late_j
            if late:
                frac = rng.uniform(1.08, 1.6)
            start = t
            end = start + budget * frac
            for incident in ctx.schedule.overlapping(unit, start, int(end)):
                overlap = min(end, incident.end_ms) - max(start, incident.start_ms)
                end += overlap if incident.status == "down" else overlap / 2
            end_ms = _sec(end)
            if j == skip_j:  # both variants lose the `started`; the next scan reveals it
                self.pending_labels.append("missing_scan")
            else:
                self._scan(step.stage, "started", unit, start, "stall" if j == stall_j else None)
            if j == stall_j:
                return
            if j == stray_j:
                self._stray(step.stage, start, end_ms)
            if j == skip_j and skip_whole:
                prev_end = end_ms
                continue
            label = "late_stage" if late else None
            if step.end_action == "rejected":
                self._scan(step.stage, "rejected", unit, end_ms, label or "qc_rejection")
            else:
                uom = "kg" if route.index(step.stage) < knit else "pcs"
                qty, lost = self._quantity(uom, j >= loss_from >= 0)
                if lost:
                    loss_from = -1
                    label = label or "quantity_loss"
                self._scan(step.stage, "completed", unit, end_ms, label, qty, uom)
            prev_end = end_ms
        if stray_after:
            last = route[-1]
            at = _sec(prev_end + rng.uniform(10, 360) * MS_PER_MIN)
            self._scan(last, "completed", rng.choice(ctx.units[last]), at, "out_of_sequence")

    def _stray(self, stage: str, start: int, end: int) -> None:
        """A scan of the stage two before, posted while this visit runs (a mis-scanned bundle)."""
        route = self.plan.route
        earlier = route[route.index(stage) - 2]
        at = _sec(start + self.rng.uniform(0.05, 0.5) * (end - start))
        unit = self.rng.choice(self.ctx.units[earlier])
        self._scan(earlier, "completed", unit, at, "out_of_sequence")

    def _update(self, at: int, due_ms: int) -> None:
        shift = self.rng.uniform(-1.5, 4) * MS_PER_DAY
        new_due = max(-(-int(due_ms + shift) // MS_PER_H) * MS_PER_H, self.placed_ms + MS_PER_DAY)
        value = {
            "op": "updated",
            "order_id": self.order_id,
            "event_time": format_ms(at),
            "due_at": format_ms(new_due),
        }
        self._add(ORDERS, value, at, "order_updated")

    def _quantity(self, uom: str, lose: bool) -> tuple[float, bool]:
        """The completed quantity: small normal losses, one big one when asked (and possible)."""
        rng = self.rng
        prev = self.prev_qty.get(uom)
        lost = False
        if prev is None:
            if uom == "kg":
                qty: float = round(self.quantity * self.weight * rng.uniform(1.02, 1.06), 1)
            else:
                qty = round(self.quantity * rng.uniform(1.0, 1.03))
        elif lose:
            qty = int(prev * rng.uniform(0.8, 0.95))
            lost = True
        elif uom == "kg":
            qty = round(prev * rng.uniform(0.98, 0.999), 1)
        else:
            qty = int(prev * rng.uniform(0.985, 1.0))
        self.prev_qty[uom] = qty
        return qty, lost


def build_order(ctx: OrderContext, number: int, placed_ms: int) -> list[SimRecord]:
    """Every record of order `number` (placed at `placed_ms`), sorted by publication time."""
    return _Order(ctx, number, placed_ms).build()
