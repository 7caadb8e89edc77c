"""RULES.md "Visits": one test per bullet of the walk, plus the ETA formula."""

from __future__ import annotations

from datetime import timedelta

from rules_builders import PLAN, ROUTE, evaluate, full_run, h, of_type, scan

from schemas.alerts import AlertStatus, AlertType
from streams.rules.facts import ScanFact
from streams.rules.visits import MISSING_SCAN, OUT_OF_SEQUENCE, Walk, walk_visits


def walk(*scans: ScanFact, product: str | None = None) -> Walk:
    return walk_visits(list(scans), ROUTE, PLAN, product)


def kinds(result: Walk) -> list[tuple[str, str]]:
    return [(f.kind, f.stage) for f in result.findings]


def test_visits_started_of_expected_stage_opens_a_visit_and_makes_it_current() -> None:
    result = walk(scan("a", "yarn_sourcing", "started", 1, unit="Y1"))
    [visit] = result.visits
    assert (visit.stage, visit.number, visit.unit_id, visit.start) == (
        "yarn_sourcing",
        1,
        "Y1",
        h(1),
    )
    assert result.current is visit
    assert result.findings == []


def test_visits_started_of_later_stage_raises_missing_scan_per_skipped_stage() -> None:
    result = walk(scan("a", "knitting", "started", 1))
    assert kinds(result) == [(MISSING_SCAN, "yarn_sourcing"), (MISSING_SCAN, "dyeing")]
    assert result.current is not None
    assert result.current.stage == "knitting"
    alerts = of_type(evaluate([scan("a", "knitting", "started", 1)], now=2), AlertType.MISSING_SCAN)
    assert [(a.stage, a.visit, a.deadline) for a in alerts] == [
        ("dyeing", None, h(1)),
        ("yarn_sourcing", None, h(1)),
    ]


def test_visits_started_of_later_stage_leaves_the_open_visit_open_forever() -> None:
    scans = [
        scan("a", "yarn_sourcing", "started", 0),
        scan("b", "knitting", "started", 10),
        scan("c", "yarn_sourcing", "completed", 11),
    ]
    result = walk(*scans)
    assert kinds(result) == [(MISSING_SCAN, "dyeing"), (OUT_OF_SEQUENCE, "yarn_sourcing")]
    assert result.visits[0].end is None
    overdue = of_type(evaluate(scans, now=100), AlertType.STAGE_OVERDUE)
    assert [(a.stage, a.status) for a in overdue] == [
        ("yarn_sourcing", AlertStatus.OPEN),
        ("knitting", AlertStatus.OPEN),
    ]


def test_visits_started_while_same_stage_open_is_an_ignored_duplicate_start() -> None:
    result = walk(scan("a", "dyeing", "started", 1), scan("b", "dyeing", "started", 2))
    assert [v.start for v in result.visits] == [h(1)]
    assert kinds(result) == [(MISSING_SCAN, "yarn_sourcing")]


def test_visits_completed_of_open_visit_stage_ends_it() -> None:
    result = walk(
        scan("a", "yarn_sourcing", "started", 1),
        scan("b", "yarn_sourcing", "completed", 5, quantity=10, uom="kg"),
    )
    [visit] = result.visits
    assert (visit.end, visit.outcome, visit.quantity, visit.uom) == (h(5), "completed", 10, "kg")
    assert result.current is None
    assert result.expected == "dyeing"


def test_visits_completed_with_no_visit_open_opens_and_ends_visit_of_unknown_start() -> None:
    scans = [scan("a", "dyeing", "completed", 30, unit="D1")]
    result = walk(*scans)
    [visit] = result.visits
    assert (visit.stage, visit.start, visit.end, visit.unit_id) == ("dyeing", None, h(30), "D1")
    assert kinds(result) == [(MISSING_SCAN, "yarn_sourcing"), (MISSING_SCAN, "dyeing")]
    assert of_type(evaluate(scans, now=1000), AlertType.STAGE_OVERDUE) == []


def test_visits_rejected_with_no_visit_open_opens_and_ends_a_rejected_visit() -> None:
    result = walk(*full_run()[:8], scan("r", "quality_check", "rejected", 60))
    qc = result.visits[-1]
    assert (qc.stage, qc.start, qc.outcome) == ("quality_check", None, "rejected")
    assert kinds(result) == [(MISSING_SCAN, "quality_check")]
    assert result.expected == "tailoring"


def test_visits_rejected_ends_the_open_qc_visit_and_sends_the_order_to_rework() -> None:
    result = walk(
        *full_run()[:9],
        scan("r", "quality_check", "rejected", 55),
        scan("t2", "tailoring", "started", 56),
    )
    qc = result.visits[4]
    assert (qc.stage, qc.outcome, qc.end) == ("quality_check", "rejected", h(55))
    assert (result.visits[-1].stage, result.visits[-1].number) == ("tailoring", 2)
    assert result.findings == []


def test_visits_earlier_stage_outside_a_rework_is_out_of_sequence() -> None:
    result = walk(
        scan("a", "yarn_sourcing", "started", 0),
        scan("b", "yarn_sourcing", "completed", 5),
        scan("c", "yarn_sourcing", "started", 6),
    )
    assert kinds(result) == [(OUT_OF_SEQUENCE, "yarn_sourcing")]
    assert len(result.visits) == 1
    [alert] = of_type(
        evaluate(
            [
                scan("a", "yarn_sourcing", "started", 0),
                scan("b", "yarn_sourcing", "completed", 5),
                scan("c", "yarn_sourcing", "started", 6, unit="Y9"),
            ],
            now=7,
        ),
        AlertType.OUT_OF_SEQUENCE,
    )
    assert (alert.stage, alert.deadline, alert.unit_id, alert.status) == (
        "yarn_sourcing",
        h(6),
        "Y9",
        AlertStatus.OPEN,
    )


def test_visits_completed_of_another_stage_while_a_visit_is_open_is_out_of_sequence() -> None:
    result = walk(scan("a", "yarn_sourcing", "started", 0), scan("b", "dyeing", "completed", 5))
    assert kinds(result) == [(OUT_OF_SEQUENCE, "dyeing")]
    assert result.visits[0].end is None


def test_visits_any_scan_after_the_order_is_complete_is_out_of_sequence() -> None:
    result = walk(*full_run(), scan("z", "shipping", "started", 500))
    assert result.completed_at == h(60)
    assert kinds(result) == [(OUT_OF_SEQUENCE, "shipping")]


def test_visits_ties_are_sorted_by_event_id_not_arrival() -> None:
    later_id_first = walk(
        scan("b", "yarn_sourcing", "completed", 1), scan("a", "yarn_sourcing", "started", 1)
    )
    assert kinds(later_id_first) == []
    assert later_id_first.visits[0].start == h(1)


def test_eta_with_open_visit_is_its_budget_end_plus_handoff_and_duration_of_the_rest() -> None:
    result = walk(scan("a", "yarn_sourcing", "started", 0))
    rest = sum((PLAN.handoff + PLAN.duration(s) for s in ROUTE[1:]), timedelta(0))
    assert result.etas[-1][1] == h(48) + rest
    assert rest == timedelta(hours=284)  # the examples README's arithmetic


def test_eta_with_open_visit_past_its_budget_starts_from_the_scan_time() -> None:
    result = walk(
        scan("a", "yarn_sourcing", "started", 0), scan("b", "yarn_sourcing", "started", 60)
    )  # duplicate start at 60h > 48h
    rest = sum((PLAN.handoff + PLAN.duration(s) for s in ROUTE[1:]), timedelta(0))
    assert result.etas[-1][1] == h(60) + rest


def test_eta_without_open_visit_starts_at_scan_time_with_the_expected_stage() -> None:
    result = walk(
        scan("a", "yarn_sourcing", "started", 0), scan("b", "yarn_sourcing", "completed", 10)
    )
    rest = sum((PLAN.handoff + PLAN.duration(s) for s in ROUTE[1:]), timedelta(0))
    assert result.etas[-1][1] == h(10) + rest


def test_eta_uses_the_product_duration_override() -> None:
    plain = walk(scan("a", "yarn_sourcing", "started", 0))
    merino = walk(scan("a", "yarn_sourcing", "started", 0), product="merino-crewneck")
    assert merino.etas[-1][1] - plain.etas[-1][1] == timedelta(hours=12)
