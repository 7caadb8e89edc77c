"""RULES.md "Obligations": the situations table, then one test per obligation type."""

from __future__ import annotations

from rules_builders import (
    created,
    downtimes_of,
    evaluate,
    full_run,
    h,
    of_type,
    plan_with,
    scan,
    unit_record,
    updated,
)

from schemas.alerts import AlertStatus, AlertType, Severity

DYE_START = scan("d1", "dyeing", "started", 0, unit="D1")  # deadline 36h
YARN = [scan("y1", "yarn_sourcing", "started", -20), scan("y2", "yarn_sourcing", "completed", -5)]


def dyeing_overdue(end: float | None, now: float, grace: str = "0s") -> list[AlertStatus]:
    scans = [*YARN, DYE_START]
    if end is not None:
        scans.append(scan("d2", "dyeing", "completed", end, unit="D1"))
    evaluation = evaluate(
        scans, records=[created(placed=-24)], now=now, plan=plan_with(grace=grace)
    )
    return [a.status for a in of_type(evaluation, AlertType.STAGE_OVERDUE)]


def test_obligation_fulfilled_on_time_gives_no_alert() -> None:
    assert dyeing_overdue(end=36, now=100) == []


def test_obligation_fulfilled_within_grace_gives_no_alert() -> None:
    assert dyeing_overdue(end=37, now=100, grace="2h") == []


def test_obligation_fulfilled_late_is_resolved_with_fulfilled_at_and_lateness() -> None:
    [alert] = of_type(
        evaluate(
            [*YARN, DYE_START, scan("d2", "dyeing", "completed", 40)],
            records=[created(placed=-24)],
            now=100,
        ),
        AlertType.STAGE_OVERDUE,
    )
    assert (alert.status, alert.fulfilled_at, alert.lateness_s) == (
        AlertStatus.RESOLVED,
        h(40),
        4 * 3600,
    )


def test_obligation_not_fulfilled_at_or_after_deadline_plus_grace_is_open() -> None:
    assert dyeing_overdue(end=None, now=36) == [AlertStatus.OPEN]
    assert dyeing_overdue(end=None, now=37, grace="1h") == [AlertStatus.OPEN]


def test_obligation_not_fulfilled_before_deadline_plus_grace_gives_no_alert_yet() -> None:
    assert dyeing_overdue(end=None, now=35.9) == []
    assert dyeing_overdue(end=None, now=36.5, grace="1h") == []


def test_obligation_open_alert_is_detected_at_deadline_plus_grace_not_the_clock() -> None:
    scans = [*YARN, DYE_START]
    evaluation = evaluate(scans, records=[created(placed=-24)], now=500, plan=plan_with(grace="1h"))
    [alert] = of_type(evaluation, AlertType.STAGE_OVERDUE)
    assert alert.detected_at == h(37)


def test_start_overdue_deadline_is_placed_plus_start_within_fulfilled_by_any_first_scan() -> None:
    [alert] = of_type(evaluate([], now=24), AlertType.START_OVERDUE)
    assert (alert.deadline, alert.status, alert.severity, alert.stage, alert.visit) == (
        h(24),
        AlertStatus.OPEN,
        Severity.WARNING,
        None,
        None,
    )
    # Any scan counts, even one that is out of sequence (here a `completed` of a later stage).
    [late] = of_type(
        evaluate([scan("x", "dyeing", "completed", 30)], now=100), AlertType.START_OVERDUE
    )
    assert (late.status, late.fulfilled_at, late.lateness_s) == (
        AlertStatus.RESOLVED,
        h(30),
        6 * 3600,
    )
    assert (
        of_type(evaluate([scan("x", "packaging", "started", 23)], now=100), AlertType.START_OVERDUE)
        == []
    )


def test_stage_overdue_deadline_is_visit_start_plus_stage_duration_critical_with_visit() -> None:
    [alert] = of_type(
        evaluate([*YARN, DYE_START], records=[created(placed=-24)], now=40), AlertType.STAGE_OVERDUE
    )
    assert (alert.deadline, alert.severity, alert.stage, alert.visit, alert.unit_id) == (
        h(36),
        Severity.CRITICAL,
        "dyeing",
        1,
        "D1",
    )


def test_stage_overdue_uses_the_product_override() -> None:
    knit = [scan("k", "knitting", "started", 0)]
    plain = of_type(evaluate(knit, now=50), AlertType.STAGE_OVERDUE)
    merino = of_type(
        evaluate(knit, records=[created(product="merino-crewneck")], now=50),
        AlertType.STAGE_OVERDUE,
    )
    assert [a.deadline for a in plain] == [h(48)]
    assert merino == []


def test_stage_overdue_cause_is_the_earliest_overlapping_downtime_of_the_visit_unit() -> None:
    downtimes = downtimes_of(
        unit_record("u2", "degraded", 20, unit="D1", reason="power_outage"),
        unit_record("u1", "down", 10, unit="D1", reason="quality_hold"),
        unit_record("u3", "down", 1, unit="OTHER"),
    )
    [alert] = of_type(
        evaluate([*YARN, DYE_START], records=[created(placed=-24)], now=40, downtimes=downtimes),
        AlertType.STAGE_OVERDUE,
    )
    assert alert.cause is not None
    assert (alert.cause.unit_id, alert.cause.reason, alert.cause.since) == (
        "D1",
        "quality_hold",
        h(10),
    )


def test_handoff_overdue_deadline_is_visit_end_plus_handoff_fulfilled_by_next_start() -> None:
    scans = [
        scan("a", "yarn_sourcing", "started", 0, unit="Y1"),
        scan("b", "yarn_sourcing", "completed", 10, unit="Y1"),
        scan("c", "dyeing", "started", 25),
    ]
    [alert] = of_type(evaluate(scans, now=30), AlertType.HANDOFF_OVERDUE)
    assert (alert.status, alert.deadline, alert.fulfilled_at, alert.lateness_s) == (
        AlertStatus.RESOLVED,
        h(22),
        h(25),
        3 * 3600,
    )
    assert (alert.severity, alert.stage, alert.visit, alert.unit_id) == (
        Severity.WARNING,
        "yarn_sourcing",
        1,
        "Y1",
    )
    [still_open] = of_type(evaluate(scans[:2], now=22), AlertType.HANDOFF_OVERDUE)
    assert still_open.status is AlertStatus.OPEN


def test_handoff_overdue_next_visit_of_unknown_start_fulfils_at_its_end() -> None:
    scans = [
        scan("a", "yarn_sourcing", "started", 0),
        scan("b", "yarn_sourcing", "completed", 10),
        scan("c", "dyeing", "completed", 30),
    ]
    alerts = of_type(evaluate(scans, now=100), AlertType.HANDOFF_OVERDUE)
    assert [(a.stage, a.fulfilled_at) for a in alerts] == [
        ("yarn_sourcing", h(30)),
        ("dyeing", None),
    ]


def test_handoff_overdue_after_a_rejection_is_fulfilled_by_the_rework_visit() -> None:
    run = full_run()[:9]  # through quality_check started at 38h
    scans = [
        *run,
        scan("r", "quality_check", "rejected", 40),
        scan("t", "tailoring", "started", 55),
    ]
    [alert] = of_type(evaluate(scans, now=100), AlertType.HANDOFF_OVERDUE)
    assert (alert.stage, alert.visit, alert.deadline, alert.fulfilled_at) == (
        "quality_check",
        1,
        h(52),
        h(55),
    )


def test_handoff_overdue_none_after_the_last_stage() -> None:
    assert of_type(evaluate(full_run(), now=1000), AlertType.HANDOFF_OVERDUE) == []


def test_order_overdue_deadline_is_due_at_fulfilled_by_completion_critical() -> None:
    [open_alert] = of_type(
        evaluate(full_run()[:-1], records=[created(due=50)], now=50), AlertType.ORDER_OVERDUE
    )
    assert (open_alert.status, open_alert.severity, open_alert.stage, open_alert.visit) == (
        AlertStatus.OPEN,
        Severity.CRITICAL,
        None,
        None,
    )
    [late] = of_type(
        evaluate(full_run(), records=[created(due=50)], now=100), AlertType.ORDER_OVERDUE
    )
    assert (late.status, late.fulfilled_at, late.lateness_s) == (
        AlertStatus.RESOLVED,
        h(60),
        10 * 3600,
    )


def test_only_the_latest_due_at_is_an_obligation_a_change_rebaselines() -> None:
    records = [created(due=50), updated(5, 1, due_at=80)]
    evaluation = evaluate(full_run()[:-1], records=records, now=70)
    assert of_type(evaluation, AlertType.ORDER_OVERDUE) == []
    [alert] = of_type(evaluate([], records=records, now=90), AlertType.ORDER_OVERDUE)
    assert alert.deadline == h(80)


def test_next_deadline_is_the_earliest_unfulfilled_deadline_plus_grace_after_now() -> None:
    scans = [scan("a", "yarn_sourcing", "started", 1)]  # start fulfilled; yarn due 49h
    evaluation = evaluate(scans, now=2, plan=plan_with(grace="30m"))
    assert evaluation.next_deadline == h(49.5)
    assert evaluate(full_run(), now=100).next_deadline is None
