"""Small builders for the rule tests: hours after a fixed instant, facts, one call.

Times are written as hours after BASE so each test's arithmetic reads like the
RULES.md table it checks (default plan: yarn 48h, dyeing 36h, handoff 12h, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.alerts import Alert, AlertType
from schemas.plan import SlaPlan, load_plan, plan_from_mapping
from streams.rules.downtimes import Downtime, build_downtimes
from streams.rules.evaluate import OrderEvaluation, evaluate_order
from streams.rules.facts import (
    CustomerFact,
    DowntimeRecord,
    OrderFacts,
    OrderRecordFact,
    ScanFact,
)

BASE = datetime(2027, 3, 1, tzinfo=UTC)
PLAN = load_plan(None)
ROUTE = PLAN.route
ORDER = "PO-1"


def h(hours: float) -> datetime:
    return BASE + timedelta(hours=hours)


def plan_with(**changes: Any) -> SlaPlan:
    return plan_from_mapping({**PLAN.model_dump(mode="json"), **changes})


def scan(
    event_id: str,
    stage: str,
    action: str,
    hours: float,
    unit: str = "U-1",
    quantity: float | None = None,
    uom: str | None = None,
) -> ScanFact:
    return ScanFact(event_id, stage, action, unit, h(hours), quantity, uom)


def created(
    placed: float = 0,
    due: float = 400,
    customer: str = "C-1",
    product: str = "alpaca-beanie",
    route: Sequence[str] | None = None,
    offset: int = 0,
) -> OrderRecordFact:
    return OrderRecordFact(
        "created",
        h(placed),
        offset,
        customer,
        product,
        100.0,
        h(placed),
        h(due),
        None if route is None else tuple(route),
    )


def updated(hours: float, offset: int, **fields: Any) -> OrderRecordFact:
    if "due_at" in fields:
        fields["due_at"] = h(fields["due_at"])
    if "route" in fields:
        fields["route"] = tuple(fields["route"])
    return OrderRecordFact("updated", h(hours), offset, **fields)


def cancelled(hours: float, offset: int) -> OrderRecordFact:
    return OrderRecordFact("cancelled", h(hours), offset)


def unit_record(
    event_id: str,
    status: str,
    hours: float,
    unit: str = "U-1",
    stage: str | None = "knitting",
    reason: str | None = "machine_breakdown",
) -> DowntimeRecord:
    return DowntimeRecord(event_id, unit, stage, status, reason, h(hours))


def downtimes_of(*records: DowntimeRecord) -> dict[str, list[Downtime]]:
    result: dict[str, list[Downtime]] = {}
    for downtime in build_downtimes(records):
        result.setdefault(downtime.unit_id, []).append(downtime)
    return result


def full_run(start: float = 6, unit: str = "U-1") -> list[ScanFact]:
    """An on-time pass through the default route: each stage 6h, handoffs 2h (ends at 60h)."""
    scans = []
    t = start
    for i, stage in enumerate(ROUTE):
        scans.append(scan(f"s{i}", stage, "started", t, unit))
        scans.append(scan(f"c{i}", stage, "completed", t + 6, unit))
        t += 8
    return scans


def evaluate(
    scans: Sequence[ScanFact] = (),
    records: Sequence[OrderRecordFact] | None = None,
    now: float = 1000,
    customer: CustomerFact | None = None,
    downtimes: Mapping[str, Sequence[Downtime]] | None = None,
    plan: SlaPlan = PLAN,
) -> OrderEvaluation:
    facts = OrderFacts(ORDER, list(records if records is not None else [created()]), list(scans))
    return evaluate_order(ORDER, facts, customer, downtimes or {}, plan, h(now))


def of_type(evaluation: OrderEvaluation | Mapping[str, Alert], kind: AlertType) -> list[Alert]:
    alerts = evaluation.alerts if isinstance(evaluation, OrderEvaluation) else evaluation
    return sorted(
        (a for a in alerts.values() if a.type is kind),
        key=lambda a: (a.deadline, a.stage or "", a.visit or 0),
    )
