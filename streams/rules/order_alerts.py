"""Alerts of one order from its record, walk and obligations (RULES.md tables).

`detected_at` is chosen to be a function of the facts, never the wall clock, so a
re-run publishes byte-identical alerts: `D + grace` for obligations (the instant
the miss became certain), the raising scan's `event_time` for scan findings and
`order_at_risk` (the first scan whose ETA crossed the margin), and the later of
the visit start and downtime start for `order_disrupted` (when the overlap began).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from schemas.alerts import AlertCustomer, AlertStatus, AlertType, Severity
from schemas.alerts import alert_id as make_alert_id
from schemas.common import format_utc
from schemas.plan import SlaPlan
from streams.rules.alert_json import AlertJson, alert_body, cause_json, customer_json
from streams.rules.downtimes import Downtime
from streams.rules.obligations import Obligation, alerting
from streams.rules.order_record import OrderRecord
from streams.rules.visits import MISSING_SCAN, Visit, Walk

_OBLIGATION_SEVERITY = {
    AlertType.START_OVERDUE: Severity.WARNING,
    AlertType.STAGE_OVERDUE: Severity.CRITICAL,
    AlertType.HANDOFF_OVERDUE: Severity.WARNING,
    AlertType.ORDER_OVERDUE: Severity.CRITICAL,
}


_IDS: dict[tuple[AlertType, str, str | None, int | None, datetime], str] = {}
_IDS_MAX = 200_000


def _alert_id(
    type: AlertType, order_id: str, stage: str | None, visit: int | None, deadline: datetime
) -> str:
    """`schemas.alerts.alert_id`, memoised: an order derives the same alerts again on
    every change, and the id costs a formatted time and a SHA-256."""
    key = (type, order_id, stage, visit, deadline)
    known = _IDS.get(key)
    if known is None:
        if len(_IDS) >= _IDS_MAX:
            _IDS.clear()
        known = _IDS[key] = make_alert_id(type, order_id, stage, visit, deadline)
    return known


def _cause(
    visit: Visit | None, downtimes: Mapping[str, Sequence[Downtime]]
) -> dict[str, Any] | None:
    """The earliest downtime of the visit's unit overlapping the visit, if any."""
    if visit is None:
        return None
    for downtime in downtimes.get(visit.unit_id, ()):  # sorted by (start, event_id)
        if downtime.overlaps(visit.start, visit.end):
            return cause_json(downtime.unit_id, downtime.reason, downtime.start)
    return None


class OrderAlertBuilder:
    """Collects the alerts of one order in their JSON form; the first built for an id wins.

    Every value already comes from validated facts and the plan: the alerts are
    built as the JSON the engine compares and sends (`alert_body`), not as
    models, which every evaluation would have built and dumped again.
    """

    def __init__(self, order_id: str, customer: AlertCustomer | None) -> None:
        self.order_id = order_id
        self.customer = customer_json(customer)
        self.alerts: dict[str, AlertJson] = {}

    def add(
        self,
        type: AlertType,
        severity: Severity,
        *,
        deadline: datetime,
        detected_at: datetime,
        stage: str | None = None,
        visit: int | None = None,
        unit_id: str | None = None,
        fulfilled_at: datetime | None = None,
        cause: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        identity = _alert_id(type, self.order_id, stage, visit, deadline)
        if identity in self.alerts:
            return
        self.alerts[identity] = alert_body(
            identity,
            type,
            severity,
            AlertStatus.OPEN if fulfilled_at is None else AlertStatus.RESOLVED,
            order_id=self.order_id,
            unit_id=unit_id,
            stage=stage,
            visit=visit,
            deadline=deadline,
            detected_at=detected_at,
            fulfilled_at=fulfilled_at,
            lateness_s=None if fulfilled_at is None else (fulfilled_at - deadline).total_seconds(),
            customer=self.customer,
            cause=cause,
            details=details or {},
        )

    def obligations(
        self,
        obligations: Sequence[Obligation],
        plan: SlaPlan,
        now: datetime,
        downtimes: Mapping[str, Sequence[Downtime]],
    ) -> None:
        for obligation in alerting(obligations, now, plan.grace):
            visit = obligation.visit
            self.add(
                obligation.type,
                _OBLIGATION_SEVERITY[obligation.type],
                deadline=obligation.deadline,
                detected_at=obligation.deadline + plan.grace,
                stage=visit.stage if visit else None,
                visit=visit.number if visit else None,
                unit_id=visit.unit_id if visit else None,
                fulfilled_at=obligation.fulfilled_at,
                cause=_cause(visit, downtimes),
            )

    def at_risk(self, record: OrderRecord, walk: Walk, margin: timedelta) -> None:
        """At most one per order: raised at the first scan whose ETA + margin > due_at."""
        for scan, eta in walk.etas:
            if eta + margin > record.due_at:
                self.add(
                    AlertType.ORDER_AT_RISK,
                    Severity.WARNING,
                    deadline=record.due_at,
                    detected_at=scan.event_time,
                    fulfilled_at=walk.completed_at,
                    details={
                        "eta": format_utc(eta),
                        "event_id": scan.event_id,
                        "at_risk_margin_s": int(margin.total_seconds()),
                    },
                )
                return

    def scan_findings(self, walk: Walk, qc_stage: str) -> None:
        for finding in walk.findings:
            scan = finding.scan
            details: dict[str, Any] = {
                "event_id": scan.event_id,
                "scan_stage": scan.stage,
                "scan_action": scan.action,
                "scan_unit_id": scan.unit_id,
            }
            if finding.kind == MISSING_SCAN:
                own = finding.stage == scan.stage
                self.add(
                    AlertType.MISSING_SCAN,
                    Severity.WARNING,
                    deadline=scan.event_time,
                    detected_at=scan.event_time,
                    stage=finding.stage,
                    unit_id=scan.unit_id if own else None,
                    details=details,
                )
            else:
                self.add(
                    AlertType.OUT_OF_SEQUENCE,
                    Severity.WARNING,
                    deadline=scan.event_time,
                    detected_at=scan.event_time,
                    stage=scan.stage,
                    unit_id=scan.unit_id,
                    details=details,
                )
        for loss in walk.losses:
            scan = loss.scan
            self.add(
                AlertType.QUANTITY_LOSS,
                Severity.WARNING,
                deadline=scan.event_time,
                detected_at=scan.event_time,
                stage=loss.visit.stage,
                visit=loss.visit.number,
                unit_id=loss.visit.unit_id,
                details={
                    "event_id": scan.event_id,
                    "quantity": scan.quantity,
                    "previous_quantity": loss.previous,
                    "uom": scan.uom,
                },
            )
        for visit in walk.visits:
            if visit.outcome != "rejected" or visit.end is None:
                continue
            redone = [
                later.end
                for later in walk.visits
                if later.stage == qc_stage
                and later.number > visit.number
                and later.outcome == "completed"
                and later.end is not None
            ]
            self.add(
                AlertType.QC_REJECTED,
                Severity.WARNING,
                deadline=visit.end,
                detected_at=visit.end,
                stage=visit.stage,
                visit=visit.number,
                unit_id=visit.unit_id,
                fulfilled_at=min(redone) if redone else None,
            )

    def disruptions(
        self, walk: Walk, downtimes: Mapping[str, Sequence[Downtime]], tier: str
    ) -> None:
        """One `order_disrupted` per (visit, overlapping downtime of the visit's unit)."""
        severity = Severity.CRITICAL if tier == "platinum" else Severity.WARNING
        for visit in walk.visits:
            for downtime in downtimes.get(visit.unit_id, ()):
                if not downtime.overlaps(visit.start, visit.end):
                    continue
                ends = [t for t in (downtime.end, visit.end) if t is not None]
                began = visit.start if visit.start is not None else visit.end
                assert began is not None  # a visit has a start or an end
                self.add(
                    AlertType.ORDER_DISRUPTED,
                    severity,
                    deadline=downtime.start,
                    detected_at=max(began, downtime.start),
                    stage=visit.stage,
                    visit=visit.number,
                    unit_id=visit.unit_id,
                    fulfilled_at=min(ends) if ends else None,
                    cause=cause_json(downtime.unit_id, downtime.reason, downtime.start),
                    details={"downtime_event_id": downtime.event_id, "kind": downtime.kind},
                )
