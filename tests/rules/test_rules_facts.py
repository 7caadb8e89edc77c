"""The facts (RULES.md "The facts"): identity, de-duplication, order fold, customers, downtimes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from rules_builders import (
    PLAN,
    ROUTE,
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

from schemas.alerts import Alert, AlertType, alert_id
from schemas.order_state import OrderState, OrderStatus
from streams.rules import facts as facts_module
from streams.rules.downtimes import build_downtimes
from streams.rules.facts import (
    CustomerFact,
    DowntimeRecord,
    OrderFacts,
    add_record,
    add_scan,
    add_unit_status,
    from_ms,
    to_ms,
)
from streams.rules.order_record import fold_records


def test_alert_id_is_sha256_of_type_subject_stage_visit_deadline() -> None:
    assert alert_id(AlertType.STAGE_OVERDUE, "PO-3202", "dyeing", 1, h(4 * 24 + 8)) == (
        "3b54cb50f40d13e4847f475b925c9dab411d5e9ba9249de134b750ce503c6856"
    )


def test_alert_id_writes_null_stage_and_visit_as_empty_strings() -> None:
    text = "order_overdue|PO-1|||2027-03-01T00:00:00.000Z"
    assert alert_id(AlertType.ORDER_OVERDUE, "PO-1", None, None, h(0)) == (
        hashlib.sha256(text.encode()).hexdigest()
    )


def test_alert_json_has_utc_millisecond_times_and_integer_lateness() -> None:
    alert = Alert.model_validate(
        {
            "alert_id": "ab" * 32,
            "type": "unit_down",
            "severity": "critical",
            "status": "resolved",
            "unit_id": "KNIT-N4",
            "deadline": "2027-03-08T11:00:00+01:00",
            "detected_at": "2027-03-08T10:00:00Z",
            "fulfilled_at": "2027-03-08T20:00:00Z",
            "lateness_s": 36000,
        }
    )
    data = json.loads(alert.model_dump_json())
    assert data["deadline"] == "2027-03-08T10:00:00.000Z"
    assert data["lateness_s"] == 36000
    assert isinstance(data["lateness_s"], int)
    assert alert.subject == "KNIT-N4"


def test_dedup_by_event_id_first_scan_wins_even_with_another_payload() -> None:
    facts = OrderFacts("PO-1")
    assert add_scan(facts, scan("e1", "tailoring", "completed", 10, quantity=455, uom="pcs"))
    assert not add_scan(facts, scan("e1", "tailoring", "completed", 11, quantity=478, uom="pcs"))
    assert [s.quantity for s in facts.scans] == [455]


def test_dedup_of_unit_status_and_redelivered_order_records() -> None:
    records: list[DowntimeRecord] = []
    assert add_unit_status(records, unit_record("u1", "down", 1))
    assert not add_unit_status(records, unit_record("u1", "up", 2))
    facts = OrderFacts("PO-1")
    assert add_record(facts, created(offset=3))
    assert not add_record(facts, created(offset=3))


def test_facts_round_trip_through_compact_json() -> None:
    facts = OrderFacts(
        "PO-1",
        [created(), updated(5, 1, due_at=500, route=ROUTE), cancelled(9, 2)],
        [scan("e1", "dyeing", "completed", 1.5, quantity=2.5, uom="kg")],
    )
    text = json.dumps(facts.to_json())
    assert OrderFacts.from_json(json.loads(text)) == facts
    record = unit_record("u1", "down", 1)
    assert DowntimeRecord.from_json(record.to_json()) == record
    customer = CustomerFact("C-1", "Nordic", "gold")
    assert CustomerFact.from_json(customer.to_json()) == customer


def test_facts_decode_to_the_facts_they_encode_whether_their_times_are_memoised_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scans = [
        scan("e1", "dyeing", "completed", 1.5, quantity=2.5, uom="kg"),
        scan("e2", "cutting", "started", 0.25, unit="U-9"),
    ]
    records = [created(), updated(5, 1, due_at=500, route=ROUTE), cancelled(9, 2)]
    stored_scans = json.loads(json.dumps([s.to_json() for s in scans]))
    stored_records = json.loads(json.dumps([r.to_json() for r in records]))
    for memo in ({}, dict(facts_module._FROM_MS)):  # a cold memo, then a warm one
        monkeypatch.setattr(facts_module, "_FROM_MS", memo)
        decoded = facts_module.scans_from_json(stored_scans)
        assert decoded == scans
        assert [s.event_time.tzinfo for s in decoded] == [UTC, UTC]
        assert all(s.encoded is data for s, data in zip(decoded, stored_scans, strict=True))
        folded = facts_module.records_from_json(stored_records)
        assert folded == records
        assert [r.route for r in folded] == [r.route for r in records]  # tuples, as built
        assert all(r.encoded is data for r, data in zip(folded, stored_records, strict=True))


def test_times_round_trip_through_epoch_milliseconds_memoised_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(facts_module, "_FROM_MS_MAX", 3)
    instants = [0, 1, 1_700_000_000_123, -86_400_001, 2**42 + 7]
    for ms in instants:  # the memos fill and empty (3 at most) on the way
        assert to_ms(from_ms(ms)) == ms
        assert from_ms(ms) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert len(facts_module._TO_MS) <= 3
    assert to_ms(from_ms(5)) == 5
    # not built by from_ms: computed, sub-millisecond part floored, another zone the same instant
    assert to_ms(datetime(2026, 12, 3, 12, 0, 0, 999_999, tzinfo=UTC)) == to_ms(
        datetime(2026, 12, 3, 12, 0, 0, 999_000, tzinfo=UTC)
    )
    plus_one = timezone(timedelta(hours=1))
    assert to_ms(datetime(2026, 12, 3, 13, tzinfo=plus_one)) == to_ms(
        datetime(2026, 12, 3, 12, tzinfo=UTC)
    )
    assert to_ms(from_ms(1_764_763_200_000).astimezone(plus_one)) == 1_764_763_200_000


def test_order_fold_runs_in_event_time_then_offset_order() -> None:
    # The update with the later offset has the earlier event_time: folded first.
    records = [created(offset=0), updated(20, 1, due_at=300), updated(10, 2, due_at=350)]
    fold = fold_records(records, PLAN)
    assert fold.record is not None
    assert fold.record.due_at == h(300)


def test_order_update_leaves_absent_fields_unchanged() -> None:
    fold = fold_records([created(customer="C-1", due=400), updated(5, 1, quantity=7.0)], PLAN)
    assert fold.record is not None
    assert (fold.record.customer_id, fold.record.due_at, fold.record.quantity) == (
        "C-1",
        h(400),
        7.0,
    )


def test_order_update_with_due_at_not_after_placed_at_is_a_dead_letter() -> None:
    bad = updated(5, 1, due_at=-1)
    evaluation = evaluate(records=[created(placed=0, due=400), bad])
    assert evaluation.rejected_records == [bad]
    assert evaluation.state.due_at == h(400)


def test_order_earliest_cancelled_counts() -> None:
    fold = fold_records([created(), cancelled(50, 2), cancelled(30, 1)], PLAN)
    assert fold.cancelled_at == h(30)


def test_order_without_record_uses_default_route_and_unknown_customer() -> None:
    evaluation = evaluate([scan("a", "dyeing", "started", 1)], records=[], now=100)
    assert [a.stage for a in of_type(evaluation, AlertType.MISSING_SCAN)] == ["yarn_sourcing"]
    assert all(a.customer is None for a in evaluation.alerts.values())
    assert evaluation.state.customer is None


def test_scan_off_the_latest_route_is_a_dead_letter_and_moves_back_when_route_changes() -> None:
    short = [s for s in ROUTE if s != "dyeing"]
    dye = scan("d", "dyeing", "started", 30)
    evaluation = evaluate([dye], records=[created(), updated(1, 1, route=short)])
    assert evaluation.off_route_scans == [dye]
    evaluation = evaluate(
        [dye], records=[created(), updated(1, 1, route=short), updated(2, 2, route=ROUTE)]
    )
    assert evaluation.off_route_scans == []


def test_customer_tombstone_makes_the_customer_unknown_standard_without_name() -> None:
    late = [scan("y", "yarn_sourcing", "started", 30)]  # start_overdue at placed + 24h
    known = evaluate(late, customer=CustomerFact("C-1", "Nordic", "platinum"))
    [alert] = of_type(known, AlertType.START_OVERDUE)
    assert alert.customer is not None
    assert alert.customer.name == "Nordic"
    gone = evaluate(late, customer=None)  # the tombstone removed the CRM fact
    [alert] = of_type(gone, AlertType.START_OVERDUE)
    assert alert.customer is not None
    assert (alert.customer.customer_id, alert.customer.name, alert.customer.tier) == (
        "C-1",
        None,
        "standard",
    )


def test_customer_fact_of_another_customer_counts_as_unknown() -> None:
    evaluation = evaluate(
        [scan("y", "yarn_sourcing", "started", 30)],
        customer=CustomerFact("C-9", "Other", "platinum"),
    )
    [alert] = of_type(evaluation, AlertType.START_OVERDUE)
    assert alert.customer is not None
    assert alert.customer.tier == "standard"


def test_downtime_runs_from_down_to_the_first_later_up() -> None:
    [downtime] = build_downtimes(
        [unit_record("u2", "up", 10), unit_record("u1", "down", 2), unit_record("u3", "up", 20)]
    )
    assert (downtime.kind, downtime.start, downtime.end) == ("down", h(2), h(10))


def test_downtime_each_down_or_degraded_starts_one_ending_at_the_same_up() -> None:
    downtimes = build_downtimes(
        [unit_record("a", "degraded", 1), unit_record("b", "down", 2), unit_record("c", "up", 5)]
    )
    assert [(d.kind, d.start, d.end) for d in downtimes] == [
        ("degraded", h(1), h(5)),
        ("down", h(2), h(5)),
    ]


def test_downtime_up_without_open_downtime_does_nothing_and_open_end_is_none() -> None:
    downtimes = build_downtimes([unit_record("a", "up", 1), unit_record("b", "down", 2)])
    assert [(d.start, d.end) for d in downtimes] == [(h(2), None)]


def test_downtimes_are_per_unit_and_sorted_by_time_then_event_id() -> None:
    downtimes = downtimes_of(
        unit_record("b", "down", 1, unit="K1"),
        unit_record("a", "up", 1, unit="K1"),
        unit_record("c", "down", 1, unit="K2"),
    )
    # "a" (up) sorts before "b" at the same instant: K1's downtime stays open.
    assert [(d.event_id, d.end) for d in downtimes["K1"]] == [("b", None)]
    assert [d.event_id for d in downtimes["K2"]] == ["c"]


@pytest.mark.parametrize(
    "evaluation",
    [
        pytest.param(lambda: evaluate([], now=30), id="nothing-scanned-overdue"),
        pytest.param(lambda: evaluate(full_run()), id="completed"),
        pytest.param(lambda: evaluate([], records=[created(), cancelled(2, 1)]), id="cancelled"),
        pytest.param(
            lambda: evaluate([scan("a", "dyeing", "started", 1)], records=[], now=100),
            id="no-order-record",
        ),
    ],
)
def test_the_published_snapshot_is_the_contracts_json_form_of_it(evaluation: Any) -> None:
    """`state_json`, built by hand for speed, is what the contract's model dumps: no field
    renamed, missing, extra or formatted otherwise (the engine publishes these bytes)."""
    result = evaluation()
    published = result.state_json(7)
    assert OrderState.model_validate(published).model_dump(mode="json") == published


def test_order_state_status_follows_the_alerts() -> None:
    assert evaluate([], now=1).state.status is OrderStatus.ON_TRACK
    assert evaluate([], now=30).state.status is OrderStatus.BREACHED  # start overdue
    assert evaluate(full_run()).state.status is OrderStatus.COMPLETED
    assert evaluate([], records=[created(), cancelled(2, 1)]).state.status is (
        OrderStatus.CANCELLED
    )
