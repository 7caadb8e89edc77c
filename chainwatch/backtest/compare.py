"""The figures of a plan backtest, from each run's final alerts: pure, no I/O.

`chainwatch backtest` prints them, the "Plan backtest" dashboard computes the
same ones in SQL over `backtest_alerts`, and the tests check both against each
other. Definitions (docs/backtest.md):

- *breached*: the order has an `order_overdue` alert; *warned*: an `order_at_risk`.
- *warning lead time* of a breached order: its `order_overdue` deadline (the due
  date it missed) minus the `detected_at` of its first `order_at_risk`; negative
  when the warning came after the breach. Breached orders never warned have none.
- *lateness per stage*: `lateness_s` of the `resolved` `stage_overdue` alerts of
  that stage (how long after its budget a visit ended); `open` ones, still
  running at the end of the run, are counted apart.
- *outcome* of an order: the set of alert types it has ("no alerts" when none);
  orders are compared across plans on that set.
- quantiles are exact and not interpolated, like ClickHouse's `quantileExact`:
  the value at index `floor(q * n)` of the sorted values.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.alerts import AlertType

NO_ALERTS = "no alerts"


@dataclass(frozen=True)
class AlertFacts:
    """What the comparison reads of one final alert."""

    alert_id: str
    type: str
    severity: str
    status: str
    order_id: str | None
    stage: str | None
    deadline: datetime
    detected_at: datetime
    lateness_s: float | None

    @classmethod
    def from_alert(cls, alert: Mapping[str, Any]) -> AlertFacts:
        """From an alert as the replay returns it (the `alerts` topic's JSON)."""
        from schemas.alerts import Alert

        model = Alert.model_validate(alert)
        return cls(
            alert_id=model.alert_id,
            type=model.type.value,
            severity=model.severity.value,
            status=model.status.value,
            order_id=model.order_id,
            stage=model.stage,
            deadline=model.deadline,
            detected_at=model.detected_at,
            lateness_s=model.lateness_s,
        )


def quantile(values: Sequence[float], q: float) -> float | None:
    """Exact quantile without interpolation (ClickHouse `quantileExact`); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class StageLateness:
    stage: str
    late: int
    """Resolved `stage_overdue` alerts: visits that ended after their budget."""
    still_open: int
    """Open `stage_overdue` alerts: visits past their budget and not ended at the run's end."""
    median_s: float | None
    p95_s: float | None


@dataclass(frozen=True)
class PlanFigures:
    plan: str
    alerts: int
    by_type_severity: tuple[tuple[str, str, int], ...]
    """(type, severity, count), sorted by type then severity."""
    orders_breached: int
    orders_warned: int
    breached_warned: int
    """Breached orders that had an `order_at_risk` (the lead times' population)."""
    lead_median_s: float | None
    lead_p10_s: float | None
    stage_lateness: tuple[StageLateness, ...]
    """One entry per stage with a `stage_overdue` alert: route order, then others by name."""


@dataclass(frozen=True)
class OutcomeDiff:
    order_id: str
    outcomes: tuple[str, ...]
    """One per plan, in the plans' order: the alert types joined by ", ", or `NO_ALERTS`."""


@dataclass(frozen=True)
class Comparison:
    plans: tuple[PlanFigures, ...]
    differing: tuple[OutcomeDiff, ...]
    """Every order whose outcome is not the same under all plans, by order_id."""


def _outcomes(alerts: Iterable[AlertFacts]) -> dict[str, frozenset[str]]:
    types: dict[str, set[str]] = defaultdict(set)
    for alert in alerts:
        if alert.order_id is not None:
            types[alert.order_id].add(alert.type)
    return {order: frozenset(found) for order, found in types.items()}


def _label(types: frozenset[str] | None) -> str:
    return ", ".join(sorted(types)) if types else NO_ALERTS


def figures(
    plan: str, alerts: Sequence[AlertFacts], stage_order: Sequence[str] = ()
) -> PlanFigures:
    """The figures of one run; `stage_order` (the route) orders the lateness rows."""
    counts = Counter((a.type, a.severity) for a in alerts)
    breaches: dict[str, datetime] = {}
    first_warning: dict[str, datetime] = {}
    lateness: dict[str, list[float]] = defaultdict(list)
    still_open: Counter[str] = Counter()
    for alert in alerts:
        if alert.order_id is None:
            continue
        if alert.type == AlertType.ORDER_OVERDUE:
            known = breaches.get(alert.order_id)
            breaches[alert.order_id] = (
                alert.deadline if known is None else min(known, alert.deadline)
            )
        elif alert.type == AlertType.ORDER_AT_RISK:
            known = first_warning.get(alert.order_id)
            first_warning[alert.order_id] = (
                alert.detected_at if known is None else min(known, alert.detected_at)
            )
        elif alert.type == AlertType.STAGE_OVERDUE and alert.stage is not None:
            if alert.status == "resolved" and alert.lateness_s is not None:
                lateness[alert.stage].append(alert.lateness_s)
            elif alert.status == "open":
                still_open[alert.stage] += 1
    leads = [
        (breach - first_warning[order]).total_seconds()
        for order, breach in breaches.items()
        if order in first_warning
    ]
    rank = {stage: i for i, stage in enumerate(stage_order)}
    stages = sorted(set(lateness) | set(still_open), key=lambda s: (rank.get(s, len(rank)), s))
    return PlanFigures(
        plan=plan,
        alerts=len(alerts),
        by_type_severity=tuple((t, s, n) for (t, s), n in sorted(counts.items())),
        orders_breached=len(breaches),
        orders_warned=len(first_warning),
        breached_warned=len(leads),
        lead_median_s=quantile(leads, 0.5),
        lead_p10_s=quantile(leads, 0.1),
        stage_lateness=tuple(
            StageLateness(
                stage=stage,
                late=len(lateness[stage]),
                still_open=still_open[stage],
                median_s=quantile(lateness[stage], 0.5),
                p95_s=quantile(lateness[stage], 0.95),
            )
            for stage in stages
        ),
    )


def compare(
    runs: Sequence[tuple[str, Sequence[AlertFacts]]], stage_order: Sequence[str] = ()
) -> Comparison:
    """Side by side: each (plan name, final alerts) run's figures and the differing orders."""
    per_plan = [_outcomes(alerts) for _, alerts in runs]
    orders = sorted(set().union(*per_plan)) if per_plan else []
    differing = []
    for order in orders:
        labels = tuple(_label(outcomes.get(order)) for outcomes in per_plan)
        if len(set(labels)) > 1:
            differing.append(OutcomeDiff(order, labels))
    return Comparison(
        plans=tuple(figures(name, alerts, stage_order) for name, alerts in runs),
        differing=tuple(differing),
    )
