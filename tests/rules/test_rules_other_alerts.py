"""RULES.md "Other alerts", cancellation, unit alerts, diff, and order independence."""

from __future__ import annotations

import random
from typing import Any

from rules_builders import (
    PLAN,
    cancelled,
    created,
    downtimes_of,
    evaluate,
    full_run,
    h,
    of_type,
    scan,
    unit_record,
    updated,
)

from schemas.alerts import Alert, AlertStatus, AlertType, Severity
from streams.rules.alert_json import alert_json
from streams.rules.diff import alert_changes
from streams.rules.evaluate import UnitOccupancy, evaluate_unit
from streams.rules.facts import CustomerFact

GOLD = CustomerFact("C-1", "Nordic", "gold")
PLATINUM = CustomerFact("C-1", "Nordic", "platinum")
FIRST = [scan("a", "yarn_sourcing", "started", 0)]  # ETA at this scan: 48h + 284h = 332h


def test_order_at_risk_when_eta_plus_tier_margin_is_after_due_at() -> None:
    assert (
        of_type(evaluate(FIRST, records=[created(due=340)], now=1), AlertType.ORDER_AT_RISK) == []
    )
    [alert] = of_type(
        evaluate(FIRST, records=[created(due=340)], customer=GOLD, now=1), AlertType.ORDER_AT_RISK
    )
    assert (alert.status, alert.deadline, alert.severity, alert.stage, alert.detected_at) == (
        AlertStatus.OPEN,
        h(340),
        Severity.WARNING,
        None,
        h(0),
    )


def test_order_at_risk_at_most_one_and_resolved_once_complete_even_if_eta_recovered() -> None:
    scans = [*FIRST, scan("z", "yarn_sourcing", "started", 100), *full_run()[1:]]
    evaluation = evaluate(scans, records=[created(due=340)], customer=GOLD, now=400)
    [alert] = of_type(evaluation, AlertType.ORDER_AT_RISK)
    assert (alert.status, alert.fulfilled_at, alert.lateness_s) == (
        AlertStatus.RESOLVED,
        h(60),
        (60 - 340) * 3600,
    )


def test_quantity_loss_below_tolerance_of_latest_earlier_same_uom_completion() -> None:
    scans = [
        scan("a", "yarn_sourcing", "started", 0),
        scan("b", "yarn_sourcing", "completed", 5, quantity=100, uom="kg"),
        scan("c", "dyeing", "started", 6),
        scan("d", "dyeing", "completed", 10, quantity=97, uom="kg"),  # exactly 3 %: fine
        scan("e", "knitting", "started", 11),
        scan("f", "knitting", "completed", 20, quantity=50, uom="pcs"),  # new uom
        scan("g", "tailoring", "started", 21, unit="T1"),
        scan("h", "tailoring", "completed", 30, quantity=94, uom="kg"),
    ]
    [alert] = of_type(evaluate(scans, now=31), AlertType.QUANTITY_LOSS)
    assert (alert.stage, alert.visit, alert.deadline, alert.status, alert.unit_id) == (
        "tailoring",
        1,
        h(30),
        AlertStatus.OPEN,
        "T1",
    )
    assert alert.details["previous_quantity"] == 97


def test_qc_rejected_open_until_a_later_qc_visit_completes() -> None:
    run = full_run()[:9]  # quality_check started at 38h
    rejected = [*run, scan("r", "quality_check", "rejected", 40, unit="Q1")]
    [alert] = of_type(evaluate(rejected, now=41), AlertType.QC_REJECTED)
    # The visit's unit is the one that started it.
    assert (alert.status, alert.stage, alert.visit, alert.deadline, alert.unit_id) == (
        AlertStatus.OPEN,
        "quality_check",
        1,
        h(40),
        "U-1",
    )
    redone = [
        *rejected,
        scan("t1", "tailoring", "started", 41),
        scan("t2", "tailoring", "completed", 44),
        scan("q1", "quality_check", "started", 45),
        scan("q2", "quality_check", "completed", 47),
    ]
    [alert] = of_type(evaluate(redone, now=48), AlertType.QC_REJECTED)
    assert (alert.status, alert.fulfilled_at, alert.lateness_s) == (
        AlertStatus.RESOLVED,
        h(47),
        7 * 3600,
    )


def test_unit_down_resolved_at_the_downtime_end_critical_with_contingency_and_orders() -> None:
    [downtime] = downtimes_of(
        unit_record("u1", "down", 10, unit="K1"), unit_record("u2", "up", 20, unit="K1")
    )["K1"]
    busy = [
        UnitOccupancy("K1", "PO-2", "knitting", 1, h(5), None),
        UnitOccupancy("K1", "PO-1", "knitting", 1, h(0), h(15)),
        UnitOccupancy("K1", "PO-3", "knitting", 1, h(20), h(30)),
    ]
    [alert] = evaluate_unit("K1", [downtime], PLAN, h(100), busy).values()
    assert (alert.type, alert.severity, alert.status, alert.order_id, alert.unit_id) == (
        AlertType.UNIT_DOWN,
        Severity.CRITICAL,
        AlertStatus.RESOLVED,
        None,
        "K1",
    )
    assert (alert.deadline, alert.fulfilled_at, alert.lateness_s) == (h(10), h(20), 36000)
    assert alert.details["orders_in_progress"] == ["PO-1", "PO-2"]
    assert alert.details["contingency"] == PLAN.contingency["knitting"]


def test_unit_degraded_is_a_warning_open_while_no_up_follows() -> None:
    [downtime] = downtimes_of(unit_record("u1", "degraded", 10, unit="K1"))["K1"]
    [alert] = evaluate_unit("K1", [downtime], PLAN, h(100)).values()
    assert (alert.type, alert.severity, alert.status, alert.lateness_s) == (
        AlertType.UNIT_DEGRADED,
        Severity.WARNING,
        AlertStatus.OPEN,
        None,
    )


def test_order_disrupted_per_visit_and_overlapping_downtime_resolved_at_earlier_end() -> None:
    downtimes = downtimes_of(
        unit_record("u1", "down", 10, unit="K1"),
        unit_record("u2", "up", 20, unit="K1"),
        unit_record("u3", "down", 40, unit="K1"),
    )
    scans = [
        scan("a", "yarn_sourcing", "started", 5, unit="K1"),
        scan("b", "yarn_sourcing", "completed", 15, unit="K1"),
    ]
    evaluation = evaluate(scans, downtimes=downtimes, customer=PLATINUM, now=50)
    [alert] = of_type(evaluation, AlertType.ORDER_DISRUPTED)
    assert (alert.status, alert.deadline, alert.fulfilled_at, alert.severity) == (
        AlertStatus.RESOLVED,
        h(10),
        h(15),
        Severity.CRITICAL,
    )
    assert (alert.stage, alert.visit, alert.unit_id) == ("yarn_sourcing", 1, "K1")
    standard = evaluate(scans[:1], downtimes=downtimes, now=50)
    alerts = of_type(standard, AlertType.ORDER_DISRUPTED)
    assert [(a.deadline, a.status, a.severity) for a in alerts] == [
        (h(10), AlertStatus.RESOLVED, Severity.WARNING),
        (h(40), AlertStatus.OPEN, Severity.WARNING),
    ]


def test_order_disrupted_visit_of_unknown_start_counts_from_its_end() -> None:
    downtimes = downtimes_of(
        unit_record("u1", "down", 10, unit="K1"), unit_record("u2", "up", 20, unit="K1")
    )
    ended_inside = [scan("b", "yarn_sourcing", "completed", 15, unit="K1")]
    assert (
        len(of_type(evaluate(ended_inside, downtimes=downtimes, now=50), AlertType.ORDER_DISRUPTED))
        == 1
    )
    ended_before = [scan("b", "yarn_sourcing", "completed", 5, unit="K1")]
    assert (
        of_type(evaluate(ended_before, downtimes=downtimes, now=50), AlertType.ORDER_DISRUPTED)
        == []
    )


def test_cancellation_drops_alerts_with_deadline_after_c_and_keeps_earlier_ones() -> None:
    scans = [scan("a", "yarn_sourcing", "started", 30)]  # start_overdue deadline 24h
    evaluation = evaluate(scans, records=[created(due=60), cancelled(40, 1)], now=100)
    assert {a.type for a in evaluation.alerts.values()} == {AlertType.START_OVERDUE}
    assert evaluation.next_deadline is None
    at_deadline = evaluate([], records=[created(), cancelled(24, 1)], now=100)
    assert [a.deadline for a in of_type(at_deadline, AlertType.START_OVERDUE)] == [h(24)]


def test_a_cancelled_order_leaves_its_units_at_the_cancellation() -> None:
    scans = [
        scan("a", "yarn_sourcing", "started", 0, "Y-1"),
        scan("b", "yarn_sourcing", "completed", 6, "Y-1"),  # ended before C: its own end
        scan("c", "dyeing", "started", 8, "D-1"),  # open at C: ends at C
    ]
    spans = [(u.unit_id, u.stage, u.visit, u.start, u.end) for u in evaluate(
        scans, records=[created(), cancelled(10, 1)], now=100).occupancy]  # fmt: skip
    assert spans == [("Y-1", "yarn_sourcing", 1, h(0), h(6)), ("D-1", "dyeing", 1, h(8), h(10))]
    late = [*scans, scan("d", "dyeing", "completed", 12, "D-1")]  # ended after C: at C
    spans = [(u.unit_id, u.end) for u in evaluate(
        late, records=[created(), cancelled(10, 1)], now=100).occupancy]  # fmt: skip
    assert spans == [("Y-1", h(6)), ("D-1", h(10))]
    not_cancelled = [(u.unit_id, u.end) for u in evaluate(late, records=[created()]).occupancy]
    assert not_cancelled == [("Y-1", h(6)), ("D-1", h(12))]


def _json(alerts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {key: alert_json(alert) for key, alert in alerts.items()}


def _diff(published: dict[str, Any], desired: dict[str, Any]) -> list[dict[str, Any]]:
    changes, forgotten = alert_changes(published, desired)
    assert forgotten == []
    return changes


def test_diff_publishes_new_and_changed_and_retracts_no_longer_desired_once() -> None:
    before = _json(evaluate([], records=[created(due=50)], now=60).alerts)  # start + order
    after = _json(evaluate([], records=[created(due=50), updated(5, 1, due_at=80)], now=60).alerts)
    changes = _diff(before, after)
    assert [(a["type"], a["status"]) for a in changes] == [("order_overdue", "retracted")]
    published = {**before, **{a["alert_id"]: a for a in changes}}
    assert _diff(published, after) == []
    assert [a["type"] for a in _diff({}, after)] == ["start_overdue"]


def test_diff_republishes_an_alert_whose_customer_severity_changed() -> None:
    downtimes = downtimes_of(unit_record("u1", "down", 10, unit="K1"))
    scans = [scan("a", "yarn_sourcing", "started", 5, unit="K1")]
    standard = _json(evaluate(scans, downtimes=downtimes, customer=GOLD, now=11).alerts)
    platinum = _json(evaluate(scans, downtimes=downtimes, customer=PLATINUM, now=11).alerts)
    [changed] = _diff(standard, platinum)
    assert (changed["type"], changed["severity"]) == ("order_disrupted", "critical")


def test_diff_forgets_instead_of_retracting_an_alert_whose_fact_was_folded_away() -> None:
    before = _json(evaluate([], records=[created(due=50)], now=60).alerts)
    changes, forgotten = alert_changes(before, {}, final=lambda a: a["type"] == "order_overdue")
    assert [a["type"] for a in changes] == ["start_overdue"]
    assert [before[k]["type"] for k in forgotten] == ["order_overdue"]


def test_alert_json_is_the_models_json_dump() -> None:
    downtimes = downtimes_of(unit_record("u1", "down", 10, unit="K1"))
    scans = [scan("a", "yarn_sourcing", "started", 5, unit="K1")]
    evaluation = evaluate(scans, records=[created(due=30)], downtimes=downtimes, now=40)
    built = evaluation.alerts_json  # the order side builds the JSON form directly
    assert len(built) >= 3
    assert {a["type"] for a in built.values()} >= {"order_disrupted", "order_at_risk"}
    for key, data in built.items():
        model = Alert.model_validate(data)  # a valid alert of the contract ...
        assert model.alert_id == key
        assert model.model_dump(mode="json") == data  # ... whose JSON dump it is
        assert alert_json(model) == data
    for alert in evaluate_unit("K1", downtimes["K1"], PLAN, h(40)).values():
        assert alert_json(alert) == alert.model_dump(mode="json")


def test_alerts_do_not_depend_on_the_order_facts_arrived_in() -> None:
    scans = [
        *full_run(),
        scan("x", "dyeing", "started", 20),
        scan("y", "shipping", "started", 70),
        scan("q", "quality_check", "completed", 39, quantity=1, uom="pcs"),
    ]
    records = [created(due=55), updated(3, 1, due_at=58), cancelled(90, 2)]
    downtimes = downtimes_of(unit_record("u1", "down", 10), unit_record("u2", "up", 12))
    expected = evaluate(scans, records, now=200, downtimes=downtimes).alerts
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(scans)
        rng.shuffle(records)
        shuffled = evaluate(scans, records, now=200, downtimes=downtimes).alerts
        assert sorted(shuffled) == sorted(expected)
        assert all(shuffled[k].same_content(expected[k]) for k in expected)
