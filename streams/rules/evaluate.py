"""Entry points of the rules: one order, or one unit, at clock `now`.

`evaluate_order` re-derives everything of an order from its facts on each call.
Orders have tens of scans, so a full re-walk is cheap, and it makes the result
independent of the order in which facts arrived (the core requirement): the
caller only stores facts and diffs the returned alerts against what it published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from schemas.alerts import (
    Alert,
    AlertCustomer,
    AlertStatus,
    AlertType,
    Severity,
    alert_id,
)
from schemas.order_state import OrderState, OrderStatus
from schemas.plan import DEFAULT_TIER, SlaPlan, Tier
from streams.rules.alert_json import AlertJson, customer_json
from streams.rules.downtimes import Downtime
from streams.rules.facts import (
    CustomerFact,
    OrderFacts,
    OrderRecordFact,
    ScanFact,
    format_utc_cached,
)
from streams.rules.obligations import next_obligation_instant, order_obligations
from streams.rules.order_alerts import OrderAlertBuilder
from streams.rules.order_record import RecordFold, fold_records
from streams.rules.visits import Visit, Walk, walk_visits

_BREACH_TYPES = frozenset(
    {
        AlertType.START_OVERDUE,
        AlertType.STAGE_OVERDUE,
        AlertType.HANDOFF_OVERDUE,
        AlertType.ORDER_OVERDUE,
    }
)
_RISK_TYPES = frozenset({AlertType.ORDER_AT_RISK, AlertType.ORDER_DISRUPTED})


# Not frozen: built afresh on every derivation of an order, and a frozen
# dataclass's __init__ costs about four times a plain one. Never mutated.
@dataclass(slots=True)
class UnitOccupancy:
    """A visit of an order at a unit: what `unit_down` lists as orders in progress."""

    unit_id: str
    order_id: str
    stage: str
    visit: int
    start: datetime | None
    end: datetime | None


# Not frozen: built afresh on every derivation of an order, and a frozen
# dataclass's __init__ costs about four times a plain one. Never mutated.
@dataclass(slots=True)
class OrderEvaluation:
    alerts_json: dict[str, AlertJson]
    """Desired alerts at `now` in their JSON form, by alert_id (never `retracted`:
    absence means that). What the engine compares with what it published."""
    off_route_scans: list[ScanFact]
    """Scans whose stage is not on the order's latest route: dead letters."""
    rejected_records: list[OrderRecordFact]
    """Order records the fold refused (bad `due_at`, unknown route): dead letters."""
    next_deadline: datetime | None
    """Earliest instant after `now` at which the alerts change with no new input."""
    order_id: str
    fold: RecordFold
    walk: Walk
    customer: AlertCustomer | None
    now: datetime
    version: int

    @property
    def occupancy(self) -> list[UnitOccupancy]:
        """The order's visits as its units see them, built on demand: the engine reads
        `occupancy_spans` (a model per visit on every derivation cost ~2 % of it)."""
        return [
            UnitOccupancy(v.unit_id, self.order_id, v.stage, v.number, v.start, end)
            for v, end in occupancy_spans(self.walk, self.fold.cancelled_at)
        ]

    @property
    def alerts(self) -> dict[str, Alert]:
        """The desired alerts as models, built on demand: the engine uses `alerts_json`."""
        return {key: Alert.model_validate(data) for key, data in self.alerts_json.items()}

    @property
    def state(self) -> OrderState:
        """The snapshot the engine publishes (`state_json`), read back through the
        contract's model: one builder, so what is checked here is what is sent."""
        return OrderState.model_validate(self.state_json(self.version))

    def state_json(self, version: int) -> dict[str, Any]:
        """`state.model_dump(mode="json")` with `version`, without building the models.

        The engine publishes a snapshot on every change of an order; building and
        serialising the pydantic models cost more than the rules themselves.
        """
        return state_json(
            self.order_id, self.fold, self.walk, self.customer, self.alerts_json, self.now, version
        )


def current_customer_id(facts: OrderFacts, plan: SlaPlan) -> str | None:
    """The customer the order belongs to now, so the caller can look up its CRM fact."""
    record = fold_records(facts.records, plan).record
    return record.customer_id if record is not None else None


_CUSTOMERS: dict[tuple[str, str | None, str], AlertCustomer] = {}
_CUSTOMERS_MAX = 100_000

ORDERS_LISTED = 20
"""How many of a downtime's orders in progress a unit alert lists (the first in id
order; `orders_in_progress_count` has them all): the unit keeps that list in its
state, which must stay bounded whatever the number of orders (CONTRACT v1.2), and a
long outage at a busy unit overlaps thousands."""


def _alert_customer(customer_id: str, name: str | None, tier: str) -> AlertCustomer:
    """One shared (frozen) model per customer as known: every evaluation of an order
    needs it, and `model_construct` cost more than the rest of choosing it."""
    key = (customer_id, name, tier)
    known = _CUSTOMERS.get(key)
    if known is None:
        if len(_CUSTOMERS) >= _CUSTOMERS_MAX:
            _CUSTOMERS.clear()
        known = _CUSTOMERS[key] = AlertCustomer.model_construct(
            customer_id=customer_id, name=name, tier=cast(Tier, tier)
        )
    return known


def _customer(fold: RecordFold, customer: CustomerFact | None) -> AlertCustomer | None:
    if fold.record is None:
        return None
    known = (
        customer
        if customer is not None and customer.customer_id == fold.record.customer_id
        else None
    )
    if known is None:
        return _alert_customer(fold.record.customer_id, None, DEFAULT_TIER)
    return _alert_customer(known.customer_id, known.name, known.tier)


def evaluate_order(
    order_id: str,
    facts: OrderFacts,
    customer: CustomerFact | None,
    downtimes_by_unit: Mapping[str, Sequence[Downtime]],
    plan: SlaPlan,
    now: datetime,
    version: int = 0,
    *,
    fold: RecordFold | None = None,
) -> OrderEvaluation:
    """Alerts, dead letters, snapshot and next timer of one order at clock `now`.

    `customer` is the CRM fact of the order's current customer (see
    `current_customer_id`); a fact for another customer counts as unknown.
    `downtimes_by_unit` must hold each unit's downtimes sorted by (start, event_id).
    `version` is stamped on the snapshot; the caller keeps it increasing.
    `fold` is `fold_records(facts.records, plan)` when the caller already has it.
    """
    if fold is None:
        fold = fold_records(facts.records, plan)
    record = fold.record
    on_route = set(fold.route)
    valid: list[ScanFact] = []
    off_route: list[ScanFact] = []
    for scan in facts.scans:
        (valid if scan.stage in on_route else off_route).append(scan)
    product = record.product if record is not None else None
    walk = walk_visits(valid, fold.route, plan, product)
    obligations = order_obligations(record, walk, fold.route, plan, product)
    alert_customer = _customer(fold, customer)
    tier = alert_customer.tier if alert_customer is not None else DEFAULT_TIER

    builder = OrderAlertBuilder(order_id, alert_customer)
    builder.obligations(obligations, plan, now, downtimes_by_unit)
    if record is not None:
        builder.at_risk(record, walk, plan.at_risk_margin(tier))
    builder.scan_findings(walk, plan.qc_stage)
    builder.disruptions(walk, downtimes_by_unit, tier)
    alerts = builder.alerts
    cancelled_at = fold.cancelled_at
    if cancelled_at is not None:
        limit = format_utc_cached(cancelled_at)  # one fixed-width UTC format: text order is time
        alerts = {key: alert for key, alert in alerts.items() if alert["deadline"] <= limit}

    off_route.sort(key=ScanFact.sort_key)
    return OrderEvaluation(
        alerts_json=alerts,
        off_route_scans=off_route,
        rejected_records=fold.rejected,
        next_deadline=next_obligation_instant(obligations, now, plan.grace, cancelled_at),
        order_id=order_id,
        fold=fold,
        walk=walk,
        customer=alert_customer,
        now=now,
        version=version,
    )


def occupancy_spans(
    walk: Walk, cancelled_at: datetime | None
) -> list[tuple[Visit, datetime | None]]:
    """Each visit with the end its unit sees: a cancelled order leaves its stations at
    the cancellation, whatever was scanned."""
    if cancelled_at is None:
        return [(visit, visit.end) for visit in walk.visits]
    return [
        (visit, cancelled_at if visit.end is None or visit.end > cancelled_at else visit.end)
        for visit in walk.visits
    ]


_OPEN = AlertStatus.OPEN.value


def _status(fold: RecordFold, walk: Walk, alerts: Mapping[str, AlertJson]) -> OrderStatus:
    if fold.cancelled_at is not None:
        return OrderStatus.CANCELLED
    if walk.completed_at is not None:
        return OrderStatus.COMPLETED
    open_types = {a["type"] for a in alerts.values() if a["status"] == _OPEN}
    if open_types & _BREACH_TYPES:  # StrEnum members: equal to their values
        return OrderStatus.BREACHED
    if open_types & _RISK_TYPES:
        return OrderStatus.AT_RISK
    return OrderStatus.ON_TRACK


def _opt_utc(value: datetime | None) -> str | None:
    return None if value is None else format_utc_cached(value)


def state_json(
    order_id: str,
    fold: RecordFold,
    walk: Walk,
    customer: AlertCustomer | None,
    alerts: Mapping[str, AlertJson],
    now: datetime,
    version: int,
) -> dict[str, Any]:
    """The order's snapshot (`schemas.order_state.OrderState`) in its JSON form, built
    without the models: building and serialising them cost more than the rules."""
    fmt = format_utc_cached  # a local: called for every visit on every change
    record = fold.record
    current = walk.current or (walk.visits[-1] if walk.visits else None)
    eta = walk.completed_at or (walk.etas[-1][1] if walk.etas else None)
    return {
        "order_id": order_id,
        "customer": customer_json(customer),
        "product": record.product if record else None,
        "quantity": record.quantity if record else None,
        "placed_at": fmt(record.placed_at) if record else None,
        "due_at": fmt(record.due_at) if record else None,
        "cancelled_at": _opt_utc(fold.cancelled_at),
        "stage": current.stage if current else None,
        "visit": current.number if current else None,
        "status": _status(fold, walk, alerts)._value_,  # not the enum's (Python) property
        "visits": [
            {
                "stage": v.stage,
                "visit": v.number,
                "unit_id": v.unit_id,
                "started_at": None if v.start is None else fmt(v.start),
                "ended_at": None if v.end is None else fmt(v.end),
                "outcome": v.outcome,
                "quantity": v.quantity,
                "uom": v.uom,
            }
            for v in walk.visits
        ],
        "eta": _opt_utc(eta),
        "open_alert_ids": sorted(k for k, a in alerts.items() if a["status"] == _OPEN),
        "version": version,
        "as_of": format_utc_cached(now),
    }


def evaluate_unit(
    unit_id: str,
    downtimes: Sequence[Downtime],
    plan: SlaPlan,
    now: datetime,
    orders_in_progress: Sequence[UnitOccupancy] = (),
) -> dict[str, Alert]:
    """`unit_down`/`unit_degraded` of one unit.

    Their status depends on facts only (a downtime's end is an `up` record), so
    `now` does not change them; it is accepted so both entry points look alike.
    `orders_in_progress` are the visits at this unit known to the caller; each
    alert lists the first `ORDERS_LISTED` orders (by id) whose visit overlaps its
    downtime, and counts them all.
    """
    del now
    alerts: dict[str, Alert] = {}
    for downtime in downtimes:
        if downtime.unit_id != unit_id:
            continue
        down = downtime.kind == "down"
        kind = AlertType.UNIT_DOWN if down else AlertType.UNIT_DEGRADED
        identity = alert_id(kind, unit_id, downtime.stage, None, downtime.start)
        if identity in alerts:
            continue
        orders = sorted(
            {
                o.order_id
                for o in orders_in_progress
                if o.unit_id == unit_id and downtime.overlaps(o.start, o.end)
            }
        )
        end = downtime.end
        alerts[identity] = Alert.model_construct(
            alert_id=identity,
            type=kind,
            severity=Severity.CRITICAL if down else Severity.WARNING,
            status=AlertStatus.RESOLVED if end is not None else AlertStatus.OPEN,
            order_id=None,
            unit_id=unit_id,
            stage=downtime.stage,
            visit=None,
            deadline=downtime.start,
            detected_at=downtime.start,
            fulfilled_at=end,
            lateness_s=(end - downtime.start).total_seconds() if end is not None else None,
            customer=None,
            cause=None,
            details={
                "event_id": downtime.event_id,
                "reason": downtime.reason,
                "orders_in_progress": orders[:ORDERS_LISTED],
                "orders_in_progress_count": len(orders),
                "contingency": plan.contingency.get(downtime.stage) if downtime.stage else None,
            },
        )
    return alerts
