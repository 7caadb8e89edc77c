"""The backtest figures (`chainwatch.backtest.compare`): pure, checked by hand-made alerts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from chainwatch.backtest.compare import (
    NO_ALERTS,
    AlertFacts,
    OutcomeDiff,
    compare,
    figures,
    quantile,
)

T0 = datetime(2027, 3, 1, tzinfo=UTC)
ROUTE = ("yarn", "dyeing", "knitting", "tailoring", "quality_check", "packaging", "shipping")


def alert(
    type: str,
    order: str | None,
    *,
    severity: str = "warning",
    status: str = "open",
    stage: str | None = None,
    deadline_h: float = 0,
    detected_h: float = 0,
    lateness_s: float | None = None,
) -> AlertFacts:
    return AlertFacts(
        alert_id=f"{type}|{order}|{stage}|{deadline_h}",
        type=type,
        severity=severity,
        status=status,
        order_id=order,
        stage=stage,
        deadline=T0 + timedelta(hours=deadline_h),
        detected_at=T0 + timedelta(hours=detected_h),
        lateness_s=lateness_s,
    )


def overdue(order: str, due_h: float) -> AlertFacts:
    return alert("order_overdue", order, severity="critical", deadline_h=due_h, detected_h=due_h)


def at_risk(order: str, due_h: float, warned_h: float) -> AlertFacts:
    return alert("order_at_risk", order, deadline_h=due_h, detected_h=warned_h)


def late_stage(order: str, stage: str, lateness_h: float | None) -> AlertFacts:
    return alert(
        "stage_overdue",
        order,
        severity="critical",
        status="open" if lateness_h is None else "resolved",
        stage=stage,
        deadline_h=10 + (lateness_h or 0),
        lateness_s=None if lateness_h is None else lateness_h * 3600,
    )


def test_quantiles_are_exact_without_interpolation_like_clickhouse() -> None:
    assert quantile([], 0.5) is None
    assert quantile([7.0], 0.1) == 7.0
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 3.0  # index floor(0.5 * 4) = 2, no 2.5
    assert quantile([float(v) for v in range(1, 11)], 0.1) == 2.0  # index 1
    assert quantile([float(v) for v in range(1, 21)], 0.95) == 20.0  # index 19
    assert quantile([float(v) for v in range(1, 11)], 0.95) == 10.0  # clamped to the last


def test_breached_warned_and_lead_times() -> None:
    alerts = [
        # warned 48h before its due date, then breached
        at_risk("PO-1", due_h=100, warned_h=52),
        overdue("PO-1", due_h=100),
        # warned 10h before
        at_risk("PO-2", due_h=200, warned_h=190),
        overdue("PO-2", due_h=200),
        # warned 5h after it was already overdue: a negative lead time
        at_risk("PO-3", due_h=300, warned_h=305),
        overdue("PO-3", due_h=300),
        # breached, never warned: no lead time
        overdue("PO-4", due_h=400),
        # warned, never breached
        at_risk("PO-5", due_h=500, warned_h=450),
        alert("unit_down", None, severity="critical"),
    ]
    result = figures("current", alerts)
    assert result.alerts == 9
    assert result.orders_breached == 4
    assert result.orders_warned == 4
    assert result.breached_warned == 3
    # lead times -5h, 10h, 48h: median = index 1, p10 = index 0
    assert result.lead_median_s == 10 * 3600
    assert result.lead_p10_s == -5 * 3600
    assert result.by_type_severity == (
        ("order_at_risk", "warning", 4),
        ("order_overdue", "critical", 4),
        ("unit_down", "critical", 1),
    )


def test_no_breach_has_no_lead_time() -> None:
    result = figures("p", [at_risk("PO-1", due_h=10, warned_h=1)])
    assert (result.orders_breached, result.lead_median_s, result.lead_p10_s) == (0, None, None)


def test_stage_lateness_from_resolved_stage_overdue_in_route_order() -> None:
    alerts = [
        late_stage("PO-1", "knitting", 2),
        late_stage("PO-2", "knitting", 6),
        late_stage("PO-3", "knitting", 4),
        late_stage("PO-4", "knitting", None),  # still running at the end
        late_stage("PO-1", "dyeing", 1),
        # lateness of other types is not stage lateness
        alert("handoff_overdue", "PO-1", status="resolved", stage="dyeing", lateness_s=99999),
    ]
    result = figures("p", alerts, ROUTE)
    assert [s.stage for s in result.stage_lateness] == ["dyeing", "knitting"]
    knitting = result.stage_lateness[1]
    assert (knitting.late, knitting.still_open) == (3, 1)
    assert knitting.median_s == 4 * 3600
    assert knitting.p95_s == 6 * 3600
    dyeing = result.stage_lateness[0]
    assert (dyeing.late, dyeing.still_open, dyeing.median_s) == (1, 0, 3600)


def test_orders_whose_outcome_differs_and_only_those() -> None:
    current = [
        overdue("PO-1", 100),
        late_stage("PO-2", "dyeing", 1),
        late_stage("PO-3", "dyeing", 1),
        late_stage("PO-3", "dyeing", 2),
    ]
    proposed = [
        at_risk("PO-1", 100, 60),
        overdue("PO-1", 100),
        # PO-2 has no alerts under this plan; PO-3 has one stage_overdue instead of two
        late_stage("PO-3", "dyeing", 1),
        at_risk("PO-9", 900, 800),
    ]
    result = compare([("current", current), ("proposed", proposed)], ROUTE)
    assert result.differing == (
        OutcomeDiff("PO-1", ("order_overdue", "order_at_risk, order_overdue")),
        OutcomeDiff("PO-2", ("stage_overdue", NO_ALERTS)),
        OutcomeDiff("PO-9", (NO_ALERTS, "order_at_risk")),
    )
    assert [p.plan for p in result.plans] == ["current", "proposed"]


def test_same_alerts_in_any_order_give_the_same_figures() -> None:
    alerts = [
        at_risk("PO-1", 100, 52),
        overdue("PO-1", 100),
        at_risk("PO-2", 200, 190),
        overdue("PO-2", 200),
        late_stage("PO-1", "knitting", 2),
        late_stage("PO-2", "knitting", 6),
        late_stage("PO-3", "dyeing", None),
    ]
    expected = compare([("a", alerts), ("b", alerts[:3])], ROUTE)
    shuffled = list(alerts)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert compare([("a", shuffled), ("b", alerts[:3])], ROUTE) == expected


def test_from_alert_reads_the_topic_json() -> None:
    facts = AlertFacts.from_alert(
        {
            "alert_id": "5f0c" * 16,
            "type": "stage_overdue",
            "severity": "critical",
            "status": "resolved",
            "order_id": "PO-3202",
            "stage": "dyeing",
            "visit": 1,
            "deadline": "2027-03-05T08:00:00Z",
            "detected_at": "2027-03-05T08:00:00Z",
            "fulfilled_at": "2027-03-05T12:00:00Z",
            "lateness_s": 14400,
        }
    )
    assert facts.lateness_s == pytest.approx(14400)
    assert facts.deadline == datetime(2027, 3, 5, 8, tzinfo=UTC)
    assert (facts.type, facts.stage, facts.order_id) == ("stage_overdue", "dyeing", "PO-3202")
