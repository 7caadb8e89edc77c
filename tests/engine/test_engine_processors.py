"""The engine's pure parts without a broker: OrderProcessor, UnitProcessor, OrderSlot,
DeadlineIndex, EngineClock (versioned joins, redelivery, occupancy, dead-letter
tagging, bounded state, eviction)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import yaml

import schemas.plan
from schemas.dead_letter import ReasonCode
from schemas.orders import OrderRecord
from schemas.plan import load_plan, plan_from_mapping
from schemas.scans import ScanEvent
from schemas.unit_status import UnitStatus
from schemas.validation import decode_input
from streams.engine.clock import DeadlineIndex, EngineClock
from streams.engine.limits import DAY_MS, EngineLimits
from streams.engine.messages import (
    CustomerAnswer,
    DowntimeAnswer,
    Occupancy,
    OrderInbox,
    Tick,
    decode_customer_inbox,
    decode_order_inbox,
    decode_unit_inbox,
    encode_bundle,
)
from streams.engine.order_agents import OrderAgents
from streams.engine.order_processor import (
    Arrival,
    Effects,
    OrderProcessor,
    Received,
    RecordPosition,
)
from streams.engine.order_slot import OrderSlot, peek
from streams.engine.runtime import EngineRuntime
from streams.engine.unit_processor import (
    OccupancyEntry,
    UnitProcessor,
    UnitSlot,
    _overlapping,
    _spans,
)
from streams.rules.downtimes import Downtime
from streams.rules.facts import CustomerFact, from_ms, to_ms
from streams.rules.record_facts import unit_status_fact

PLAN = load_plan(None)
T0 = datetime(2027, 3, 1, tzinfo=UTC)
ROUTE = ["yarn_sourcing", "dyeing", "knitting", "tailoring", "quality_check", "packaging",
         "shipping"]  # fmt: skip


def _t(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def _record(topic: str, value: dict[str, Any]) -> Any:
    return decode_input(topic, json.dumps(value).encode(), plan=PLAN)


def _order(**changes: Any) -> OrderRecord:
    value = {"op": "created", "order_id": "PO-1", "customer_id": "C-1", "product": "crewneck",
             "quantity": 100, "placed_at": _t(0), "due_at": _t(24 * 20), **changes}  # fmt: skip
    record: OrderRecord = _record("orders", value)
    return record


def _scan(event_id: str, stage: str, action: str, hours: float, unit: str = "U-1") -> ScanEvent:
    scan: ScanEvent = _record("scans", {
        "event_id": event_id, "order_id": "PO-1", "stage": stage, "action": action,
        "unit_id": unit, "event_time": _t(hours)})  # fmt: skip
    return scan


def _status(event_id: str, status: str, hours: float, unit: str = "DYE-1") -> UnitStatus:
    value = {"event_id": event_id, "unit_id": unit, "status": status, "event_time": _t(hours)}
    record: UnitStatus = _record("unit-status", value)
    return record


def _src(topic: str, offset: int) -> RecordPosition:
    return RecordPosition(topic, 0, offset)


def _roundtrip(slot: OrderSlot) -> OrderSlot:
    """What the table does between two inputs: JSON bytes and back."""
    return OrderSlot.from_json(orjson.loads(orjson.dumps(slot.to_json())))


def _complete(processor: OrderProcessor, slot: OrderSlot) -> None:
    processor.on_order_record(slot, _order(), _src("orders", 0), b"{}", T0)
    for i, stage in enumerate(ROUTE):
        for action, h in (("started", 2 * i + 1), ("completed", 2 * i + 2)):
            scan = _scan(f"{stage}-{action}", stage, action, h)
            processor.on_scan(slot, scan, _src("scans", 2 * i), b"{}", T0 + timedelta(hours=h))


def _completing() -> list[Arrival]:
    """The order record and every scan of the route, started and completed: it closes."""
    arrivals = [Arrival(_order(), T0, _src("orders", 0), b"{}", None)]
    for i, stage in enumerate(ROUTE):
        for action, h in (("started", 2 * i + 1), ("completed", 2 * i + 2)):
            scan = _scan(f"{stage}-{action}", stage, action, h)
            arrivals.append(Arrival(scan, T0 + timedelta(hours=h), _src("scans", 2 * i), b"{}"))
    return arrivals


def test_a_redelivered_scan_changes_nothing_but_re_sends_the_joins() -> None:
    processor = OrderProcessor(PLAN)
    slot = OrderSlot.new("PO-1")
    processor.on_order_record(slot, _order(), _src("orders", 0), b"{}", T0)
    scan = _scan("e-1", "yarn_sourcing", "started", 1, unit="YARN-1")
    first = processor.on_scan(slot, scan, _src("scans", 0), b"{}", T0)
    slot = _roundtrip(slot)
    again = processor.on_scan(slot, scan, _src("scans", 0), b"{}", T0)
    assert first.changed
    assert first.snapshot is not None
    assert not again.changed
    assert again.snapshot is None
    assert again.alerts == []
    assert [(s.customer_id, s.subscribe) for s in again.subscriptions] == [("C-1", True)]
    assert [(o.unit_id, o.version) for o in again.occupancy] == [("YARN-1", slot.occupancy_version)]


def test_an_older_customer_answer_never_overwrites_a_newer_one() -> None:
    processor = OrderProcessor(PLAN)
    slot = OrderSlot.new("PO-1")
    processor.on_order_record(slot, _order(), _src("orders", 0), b"{}", T0)
    newer = CustomerAnswer("PO-1", "C-1", 9, CustomerFact("C-1", "New", "platinum"))
    older = CustomerAnswer("PO-1", "C-1", 3, CustomerFact("C-1", "Old", "gold"))
    assert processor.on_customer(slot, newer, T0).changed
    assert not processor.on_customer(slot, older, T0).changed
    assert slot.customer is not None
    assert slot.customer.name == "New"
    other = CustomerAnswer("PO-1", "C-2", 99, CustomerFact("C-2", "X", "gold"))
    assert not processor.on_customer(slot, other, T0).changed


def test_a_join_answer_that_changes_nothing_is_stored_without_an_evaluation() -> None:
    processor = OrderProcessor(PLAN)
    slot = OrderSlot.new("PO-1")
    processor.on_order_record(slot, _order(), _src("orders", 0), b"{}", T0)
    fact = CustomerFact("C-1", "A", "gold")
    first = processor.on_customer(slot, CustomerAnswer("PO-1", "C-1", 3, fact), T0)
    version = slot.version
    same = processor.on_customer(slot, CustomerAnswer("PO-1", "C-1", 8, fact), T0)
    assert first.snapshot is not None
    assert same.changed
    assert same.snapshot is None
    assert slot.version == version
    assert slot.customer_version == 8
    unknown = processor.on_customer(slot, CustomerAnswer("PO-1", "C-1", 9, None), T0)
    assert unknown.snapshot is not None  # a different fact is evaluated


def test_an_off_route_scan_is_dead_lettered_once_with_its_source() -> None:
    processor = OrderProcessor(PLAN)
    slot = OrderSlot.new("PO-1")
    processor.on_order_record(slot, _order(route=["yarn_sourcing", "dyeing"]), _src("orders", 0),
                              b"{}", T0)  # fmt: skip
    effects = processor.on_scan(
        slot, _scan("e-9", "knitting", "started", 1), _src("scans", 4), b"raw", T0
    )
    assert [(d.reason_code, d.source.offset, d.raw_value()) for d in effects.dead_letters] == [
        (ReasonCode.OFF_ROUTE, 4, b"raw")
    ]
    later = processor.on_clock(_roundtrip(slot), T0 + timedelta(hours=2))
    assert later.dead_letters == []  # tagged: never dead-lettered twice


def test_a_record_refused_by_the_fold_says_why_its_route_or_its_due_date() -> None:
    """Every record the fold refused was `due_at is not after placed_at`, a route with
    a stage the plan does not know included (that one decoding now refuses; the
    engine still meets it in an order stored before its plan lost the stage)."""
    inspection = [*ROUTE[:4], "inspection", *ROUTE[4:]]
    data = PLAN.model_dump()
    data["route"] = inspection
    data["stage_duration"] = {**data["stage_duration"], "inspection": timedelta(hours=2)}
    wider = type(PLAN).model_validate(data)
    value = {"op": "created", "order_id": "PO-1", "customer_id": "C-1", "quantity": 1,
             "placed_at": _t(0),
             "due_at": _t(24 * 20), "route": inspection}  # fmt: skip
    stored = decode_input("orders", json.dumps(value).encode(), plan=wider)
    processor = OrderProcessor(PLAN)  # restarted with the plan without `inspection`
    slot = OrderSlot.new("PO-1")
    effects = processor.on_order_record(slot, stored, _src("orders", 0), b"{}", T0)
    ((letter, error),) = [(d, d.errors[0]) for d in effects.dead_letters]
    assert letter.reason_code is ReasonCode.BAD_UPDATE
    assert (error.loc, error.msg) == (
        "route",
        "route names 'inspection', not a stage of the SLA plan",
    )

    other = OrderSlot.new("PO-1")
    processor.on_order_record(other, _order(), _src("orders", 1), b"{}", T0)
    early = _record("orders", {"op": "updated", "order_id": "PO-1", "due_at": _t(-1),
                               "event_time": _t(1)})  # fmt: skip
    (due,) = processor.on_order_record(other, early, _src("orders", 2), b"{}", T0).dead_letters
    assert (due.errors[0].loc, due.errors[0].msg) == ("due_at", "due_at is not after placed_at")


def test_scans_beyond_the_cap_are_state_limit_dead_letters_and_the_slot_stays_small() -> None:
    limits = EngineLimits(max_scans_per_order=50)
    processor = OrderProcessor(PLAN, limits=limits)
    slot = OrderSlot.new("PO-1")
    processor.on_order_record(slot, _order(), _src("orders", 0), b"{}", T0)
    refused = []
    for n in range(2000):
        stage = "yarn_sourcing" if n % 2 else "dyeing"
        effects = processor.on_scan(
            slot, _scan(f"e-{n}", stage, "started", 1 + n / 100), _src("scans", n), b"{}", T0
        )
        refused += [d.reason_code for d in effects.dead_letters]
    assert len(slot.facts.scans) == 50
    assert refused == [ReasonCode.STATE_LIMIT] * 1950
    assert len(orjson.dumps(slot.to_json())) < 100_000


def test_a_full_or_closed_orders_scan_gate_refuses_exactly_as_its_slot_would() -> None:
    """The agents refuse a hot order's scans from its gate, without decoding the slot."""
    processor = OrderProcessor(PLAN, limits=EngineLimits(max_scans_per_order=20))
    slot = OrderSlot.new("PO-1")
    processor.on_order_record(slot, _order(), _src("orders", 0), b"{}", T0)
    for n in range(20):
        scan = _scan(f"e-{n}", "yarn_sourcing", "started", 1 + n / 100)
        assert processor.scan_gate(slot) is None  # still taking scans: no gate
        processor.on_scan(slot, scan, _src("scans", n), b"{}", T0)
    gate = processor.scan_gate(slot)
    assert gate is not None
    for n in (5, 25, 26):
        scan = _scan(f"e-{n}", "dyeing", "started", 2 + n / 100)
        raw = f"raw-{n}".encode()
        gated = processor.refused_scan(gate, scan, _src("scans", 100 + n), raw, T0)
        full = processor.on_scan(_roundtrip(slot), scan, _src("scans", 100 + n), raw, T0)
        if n == 5:  # a known event_id re-sends the joins: only the slot can say so
            assert gated is None
            continue
        assert gated is not None
        assert [d.encode() for d in gated.dead_letters] == [d.encode() for d in full.dead_letters]
        assert [d.reason_code for d in gated.dead_letters] == [ReasonCode.STATE_LIMIT]
        assert gated == full
    closed_proc = OrderProcessor(PLAN, limits=EngineLimits(closed_order_retention_ms=2 * DAY_MS))
    closed = OrderSlot.new("PO-1")
    _complete(closed_proc, closed)
    closed_gate = closed_proc.scan_gate(closed)
    assert closed_gate is not None
    for hours in (24, 24 * 30):
        late = _scan(f"late-{hours}", "shipping", "completed", hours)
        gated = closed_proc.refused_scan(closed_gate, late, _src("scans", 7), b"x", T0)
        full = closed_proc.on_scan(_roundtrip(closed), late, _src("scans", 7), b"x", T0)
        if hours == 24:  # before the eviction instant: the slot takes (or judges) it
            assert gated is None
        else:
            assert gated == full
            assert [d.reason_code for d in full.dead_letters] == [ReasonCode.ORDER_CLOSED]


def test_a_closed_order_is_evicted_after_the_retention_and_later_records_are_refused() -> None:
    limits = EngineLimits(closed_order_retention_ms=2 * DAY_MS)
    processor = OrderProcessor(PLAN, limits=limits)
    slot = OrderSlot.new("PO-1")
    _complete(processor, slot)
    closed = to_ms(T0 + timedelta(hours=2 * len(ROUTE)))
    assert slot.closed_at_ms == closed
    assert slot.next_deadline_ms == closed + 2 * DAY_MS  # the eviction is a deadline
    assert not processor.on_clock(slot, T0 + timedelta(days=1)).evicted
    late = _scan("late", "shipping", "completed", 24 * 3)
    refused = processor.on_scan(slot, late, _src("scans", 99), b"x", T0)
    assert [d.reason_code for d in refused.dead_letters] == [ReasonCode.ORDER_CLOSED]
    assert not refused.changed
    gone = processor.on_clock(slot, T0 + timedelta(days=3))
    assert gone.evicted
    assert gone.alerts == []
    assert gone.snapshot is None
    assert [(s.customer_id, s.subscribe) for s in gone.subscriptions] == [("C-1", False)]
    assert {o.forget for o in gone.occupancy} == {True}


def test_an_order_forgets_alerts_of_downtimes_its_unit_folded_away_without_retracting() -> None:
    """Below the unit's fold horizon an alert missing from the answer is final, above
    it retracted (tests/engine/test_engine_unit_state.py: what a unit folds)."""
    orders = OrderProcessor(PLAN)
    order = OrderSlot.new("PO-1")
    orders.on_order_record(order, _order(), _src("orders", 0), b"{}", T0)
    for n, (stage, action, hours) in enumerate(
        [("yarn_sourcing", "started", 0.1), ("yarn_sourcing", "completed", 0.2),
         ("dyeing", "started", 0.5)]  # an open visit at DYE-1 from 0.5 h
    ):  # fmt: skip
        unit = "DYE-1" if stage == "dyeing" else "Y"
        orders.on_scan(order, _scan(f"s{n}", stage, action, hours, unit), _src("scans", n + 1),
                       b"{}", T0)  # fmt: skip

    def downtime(k: int) -> list[Any]:
        start = to_ms(T0 + timedelta(hours=1 + k))
        return ["DYE-1", None, "down", None, start, start + 600_000, f"u-{k}"]

    def answer(version: int, ks: list[int], floor: int | None) -> list[dict[str, Any]]:
        message = DowntimeAnswer("PO-1", "DYE-1", (version, 1), [downtime(k) for k in ks], floor)
        return orders.on_downtimes(order, message, T0 + timedelta(hours=10)).alerts

    def disrupted() -> set[str]:
        return {a["details"]["downtime_event_id"] for a in order.published.values()
                if a["type"] == "order_disrupted" and a["status"] != "retracted"}  # fmt: skip

    assert {a["status"] for a in answer(1, [0, 1, 2], None)} == {"resolved"}
    assert disrupted() == {"u-0", "u-1", "u-2"}
    floor = to_ms(T0 + timedelta(hours=1.5))  # u-0 folded away, u-1 and u-2 kept
    changes = answer(2, [2], floor)
    # u-0 (below the floor) is forgotten, u-1 (above it) retracted
    assert [(a["details"]["downtime_event_id"], a["status"]) for a in changes] == [
        ("u-1", "retracted")
    ]
    assert disrupted() == {"u-2"}
    assert order.downtime_floor["DYE-1"] == floor


def test_the_engine_clock_in_event_time_only_moves_forward_per_partition() -> None:
    clock = EngineClock("event")
    assert clock.observe(0, 1000) == 1000
    assert clock.observe(0, 500) == 1000
    assert clock.observe(1, None) == 0
    assert clock.now(0) == 1000


def test_a_held_live_clock_is_where_both_order_topics_are_read_to_until_released() -> None:
    clock = EngineClock("live", held_topics=("scans", "orders"))
    wall = int(time.time() * 1000)
    assert clock.now(0) >= wall
    assert not clock.holding
    clock.hold([0, 1, 2])
    clock.floor(0, wall - 60_000)  # a stored derivation's time
    assert clock.now(0) == wall - 60_000  # nothing read yet
    started = clock.now(2)  # nothing stored, nothing read: the hold's start
    assert wall <= started <= int(time.time() * 1000)
    clock.read_to(2, "orders", wall - 5_000)  # nothing stored: the earliest record read
    clock.read_to(2, "orders", wall - 2_000)
    assert clock.now(2) == wall - 5_000
    clock.read_to(2, "scans", wall - 9_000)  # an earlier scan read: it never goes back
    assert clock.now(2) == wall - 5_000
    # the order records' backlog is read at once, the scans' is not: the scans hold it
    clock.read_to(0, "orders", wall - 1_000)
    assert clock.now(0) == wall - 60_000
    clock.read_to(0, "scans", wall - 30_000)
    assert clock.now(0) == wall - 30_000
    assert clock.observe(0, wall + 10**9) == wall - 30_000  # event times do not move it
    clock.read_to(0, "scans", wall - 40_000)  # an older record: the clock stays
    assert clock.now(0) == wall - 30_000
    clock.read_to_end(0, "scans")  # scans read to their end: the order records hold it
    assert clock.now(0) == wall - 1_000
    clock.read_to_end(0, "orders")
    assert clock.now(0) >= wall
    clock.read_to(1, "scans", wall + 10**9)  # a producer's timestamp far ahead
    clock.read_to(1, "orders", wall + 10**9)
    assert clock.now(1) <= int(time.time() * 1000)  # never past the wall
    assert clock.target(0) >= wall
    assert clock.held() == [0, 1, 2]
    assert clock.held_s(0) >= 0
    assert clock.held_s(7) == 0
    clock.hold([0, 3])  # a later recovery: a hold keeps its start, a new one begins
    assert clock.now(0) >= wall  # its topics to be read again, but it never goes back
    assert clock.held() == [0, 1, 2, 3]
    clock.forget([0, 1, 3])  # partition 2 went to another worker
    assert clock.held() == [0, 1, 3]
    assert clock.release(0) >= 0
    assert clock.held() == [1, 3]
    assert clock.now(0) >= wall


def test_an_event_time_clock_is_never_held() -> None:
    clock = EngineClock("event", held_topics=("scans", "orders"))
    clock.hold([0])
    clock.read_to(0, "scans", 5000)
    assert not clock.holding
    assert clock.now(0) == 0


def test_the_deadline_index_pops_only_what_fell_due_per_partition() -> None:
    index = DeadlineIndex()
    index.schedule(0, 300, "b")
    index.schedule(0, 100, "a")
    index.schedule(1, 50, "c")
    assert index.next_due(0) == 100
    assert list(index.pop_due(0, 300)) == [(100, "a"), (300, "b")]
    assert index.next_due(0) is None
    assert index.next_due(1) == 50
    assert index.partitions() == [0, 1]


def test_a_key_has_one_live_deadline_the_last_scheduled() -> None:
    """An order is scheduled again on every change: the same deadline adds no entry, a
    new one replaces the old (handed out once, at the new time), None unschedules."""
    index = DeadlineIndex()
    for _ in range(3):
        index.schedule(0, 100, "a")
    assert index.size(0) == 1
    index.schedule(0, 200, "a")  # moved later: the entry at 100 is stale
    index.schedule(0, 150, "b")
    index.schedule(0, 120, "b")
    index.schedule(0, 150, "b")  # back to 150: handed out once, not twice
    index.schedule(0, 130, "c")
    index.schedule(0, None, "c")  # evicted or closed: no deadline
    assert list(index.pop_due(0, 149)) == []
    assert list(index.pop_due(0, 1_000)) == [(150, "b"), (200, "a")]
    assert index.size(0) == 0
    index.schedule(0, 100, "a")  # handed out, so a new deadline is scheduled again
    assert list(index.pop_due(0, 100)) == [(100, "a")]


def test_every_internal_message_decodes_to_itself_in_its_bundle() -> None:
    processor = OrderProcessor(PLAN)
    slot = OrderSlot.new("PO-1")
    _complete(processor, slot)
    customer = CustomerAnswer("PO-1", "C-1", 4, CustomerFact("C-1", "A", "gold"))
    units = UnitProcessor(PLAN)
    unit = UnitSlot("U-1")
    occupancy = Occupancy("PO-1", "U-1", 1, [["dyeing", 1, 0, None]])
    forget = Occupancy("PO-2", "U-1", 3, forget=True)
    assert decode_unit_inbox(encode_bundle([occupancy.encode(), forget.encode()])) == [
        occupancy,
        forget,
    ]
    units.on_occupancies(unit, [occupancy], {"PO-1": None}, T0, dict)
    answers = units.on_status(
        unit, unit_status_fact(_status("u-1", "down", 1, unit="U-1")),
        {"PO-1": OccupancyEntry(1, occupancy.visits)}, T0, _src("unit-status", 0), b"{}",
    ).answers  # fmt: skip
    assert answers
    inbox: list[OrderInbox] = [customer, Tick(7), *answers]
    assert decode_order_inbox(encode_bundle([m.encode() for m in inbox])) == inbox
    subs = processor.rejoin(slot).subscriptions
    assert subs
    assert decode_customer_inbox(encode_bundle([sub.encode() for sub in subs])) == subs
    # a message written before bundles (a bare object) is a bundle of one
    assert decode_order_inbox(customer.encode()) == [customer]


@pytest.mark.parametrize("raw", [b"not json", b"[]", b"{}", b"[1]", b'"x"', b'[{"k":"tick"}]'])
def test_a_corrupt_bundle_does_not_decode(raw: bytes) -> None:
    for decode in (decode_order_inbox, decode_customer_inbox, decode_unit_inbox):
        with pytest.raises((ValueError, KeyError, TypeError)):
            decode(raw)


def _inputs() -> list[Arrival]:
    """An order's record, then its scans with one late (stage overdue) and one off-route."""
    arrivals = [Arrival(_order(), T0, _src("orders", 0), b"{}", None)]
    hours = [1, 2, 3, 60, 61]  # dyeing completes 57 h after it started ...
    for n, (stage, action) in enumerate(
        [("yarn_sourcing", "started"), ("yarn_sourcing", "completed"), ("dyeing", "started"),
         ("dyeing", "completed"), ("embroidery", "started")]
    ):  # fmt: skip
        h = hours[n]
        now = T0 + timedelta(hours=50 if n == 2 else h)  # ... and is seen overdue at 50 h
        scan = _scan(f"e-{n}", stage, action, h)
        arrivals.append(Arrival(scan, now, _src("scans", n), f"raw-{n}".encode(), None))
    return arrivals


def test_a_batch_of_inputs_ends_where_one_at_a_time_ends_with_one_snapshot() -> None:
    """Batching publishes no intermediate versions, but the final alerts and facts agree."""
    processor = OrderProcessor(PLAN)
    one, batched = OrderSlot.new("PO-1"), OrderSlot.new("PO-1")
    singles = [processor.on_inputs(one, [arrival]) for arrival in _inputs()]
    effects = processor.on_inputs(batched, _inputs())

    assert batched.published == one.published
    assert batched.facts == one.facts
    assert batched.occupancy_sent == one.occupancy_sent
    assert batched.next_deadline_ms == one.next_deadline_ms
    assert sum(e.snapshot is not None for e in singles) == len(singles)
    assert effects.snapshot is not None  # one snapshot for the batch ...
    last = orjson.loads(singles[-1].snapshot or b"")
    assert orjson.loads(effects.snapshot) == {**last, "version": 1}  # ... the last state
    assert len(effects.alerts) < sum(len(e.alerts) for e in singles)  # no intermediate versions
    # the same dead letters, the off-route scan with its own source and bytes
    letters = [(d.reason_code, d.source.offset, d.raw_value()) for d in effects.dead_letters]
    assert letters == [
        (d.reason_code, d.source.offset, d.raw_value()) for e in singles for d in e.dead_letters
    ]
    assert letters == [(ReasonCode.OFF_ROUTE, 4, b"raw-4")]


def test_batches_that_owe_their_derivation_end_where_batches_deriving_each_end() -> None:
    """A worker that defers derivations applies batch after batch to the stored slot and
    derives once at the end: the same alerts, facts, joins and dead letters (sources and
    bytes kept in `Received`), one snapshot, and no intermediate alert versions."""
    processor = OrderProcessor(PLAN)
    each, owing = OrderSlot.new("PO-1"), OrderSlot.new("PO-1")
    derived = [processor.on_inputs(each, [arrival]) for arrival in _inputs()]
    received = Received()
    for arrival in _inputs():
        owes = processor.on_inputs(owing, [arrival], defer=True, received=received)
        assert owes.changed
        assert (owes.alerts, owes.snapshot, owes.dead_letters) == ([], None, [])
        assert owing.pending_ms == to_ms(arrival.now)
        owing = _roundtrip(owing)  # stored between batches, the debt with it
    assert received
    effects = processor.derive_owed(owing, received)

    assert owing.pending_ms is None
    assert not received  # the sources were used
    assert owing.published == each.published
    assert owing.facts == each.facts
    assert owing.occupancy_sent == each.occupancy_sent
    assert owing.next_deadline_ms == each.next_deadline_ms
    assert effects.snapshot is not None
    assert orjson.loads(effects.snapshot) == {**orjson.loads(derived[-1].snapshot or b""),
                                              "version": 1}  # fmt: skip
    assert len(effects.alerts) < sum(len(e.alerts) for e in derived)
    assert [(d.reason_code, d.source.offset, d.raw_value()) for d in effects.dead_letters] == [
        (ReasonCode.OFF_ROUTE, 4, b"raw-4")
    ]
    assert processor.derive_owed(owing).changed is False  # nothing owed any more


def test_an_owed_derivation_is_made_before_a_record_or_a_deadline_that_needs_it() -> None:
    """The order completes in batches that owe their derivation: a record past completion
    + retention is still refused (the derivation is made first), and so is eviction by
    the clock. While it owes one, the order has no scan gate (its stored closure may lag)."""
    limits = EngineLimits(closed_order_retention_ms=DAY_MS)
    processor = OrderProcessor(PLAN, limits=limits)
    slot = OrderSlot.new("PO-1")
    arrivals = _completing()
    processor.on_inputs(slot, arrivals, defer=True)
    assert slot.pending_ms is not None
    assert slot.closed_at_ms is None  # not derived yet
    assert processor.scan_gate(slot) is None
    late_h = 2 * len(ROUTE) + 24 + 1
    late = Arrival(_scan("late", "shipping", "started", late_h), T0 + timedelta(hours=late_h),
                   _src("scans", 99), b"late", None)  # fmt: skip
    owing = _roundtrip(slot)
    effects = processor.on_inputs(owing, [late], defer=True)
    assert [(d.reason_code, d.raw_value()) for d in effects.dead_letters] == [
        (ReasonCode.ORDER_CLOSED, b"late")
    ]
    assert effects.snapshot is not None  # the owed derivation, made before the refusal
    assert owing.pending_ms is None
    assert owing.closed_at_ms == to_ms(T0 + timedelta(hours=2 * len(ROUTE)))

    by_clock = _roundtrip(slot)
    gone = processor.on_clock(by_clock, T0 + timedelta(days=3))
    assert gone.evicted
    assert gone.snapshot is not None  # derived first, then evicted
    assert by_clock.pending_ms is None


def test_a_deadline_of_an_owing_order_that_cannot_leave_derives_it_once_at_its_clock() -> None:
    """A deadline falls due while the order owes a derivation, before its earliest fact
    + the retention: one derivation at the deadline's clock ends where the owed one and
    then the deadline's would (alerts, facts, joins, next deadline, dead letters), with
    one snapshot version fewer and no intermediate alert versions."""
    processor = OrderProcessor(PLAN)
    two, once = OrderSlot.new("PO-1"), OrderSlot.new("PO-1")
    for slot in (two, once):
        processor.on_inputs(slot, _inputs(), defer=True)
    later = T0 + timedelta(days=10)  # past the order's deadlines, well within 30 days
    derived, due = processor.derive_owed(two), processor.on_clock(two, later)
    effects = processor.on_clock(once, later)

    assert once.pending_ms is None
    assert once.published == two.published
    assert once.facts == two.facts
    assert once.occupancy_sent == two.occupancy_sent
    assert once.next_deadline_ms == two.next_deadline_ms
    assert once.closed_at_ms == two.closed_at_ms
    assert once.version == two.version - 1
    assert effects.snapshot is not None
    assert orjson.loads(effects.snapshot) == {**orjson.loads(due.snapshot or b""),
                                              "version": once.version}  # fmt: skip
    assert {a["alert_id"]: a for a in effects.alerts} == {
        a["alert_id"]: a for a in [*derived.alerts, *due.alerts]
    }  # the latest version of each alert, no earlier one
    assert len(effects.alerts) == len({a["alert_id"] for a in effects.alerts})
    assert [d.reason_code for d in effects.dead_letters] == [
        d.reason_code for d in derived.dead_letters
    ]


def test_a_stored_slot_keeps_its_debt_and_recovery_reads_it() -> None:
    processor = OrderProcessor(PLAN)
    slot = OrderSlot.new("PO-1")
    processor.on_inputs(slot, _inputs()[:2], defer=True)
    slot.clock_ms = 5
    raw = orjson.dumps(slot.to_json())
    stored, _ = peek(raw)
    assert stored.pending
    assert stored.clock_ms == slot.pending_ms  # the clock it owes the derivation at
    assert _roundtrip(slot).pending_ms == slot.pending_ms
    processor.derive_owed(slot)
    assert b'"pd"' not in orjson.dumps(slot.to_json())  # stored as before deferring existed
    assert not peek(orjson.dumps(slot.to_json()))[0].pending


def test_every_field_of_a_slot_comes_back_from_its_stored_form_and_older_forms_load() -> None:
    # distinct values everywhere: `from_json` fills the fields by position
    slot = OrderSlot.new("PO-1")
    OrderProcessor(PLAN).on_inputs(slot, _inputs()[:2])
    slot.partition, slot.customer = 3, CustomerFact("C-1", "Nordic", "gold")
    slot.customer_id, slot.customer_version, slot.subscribed_customer = "C-1", 11, "C-2"
    t = datetime(2027, 3, 1, tzinfo=UTC)
    slot.downtimes = {"U-1": [Downtime("U-1", "dyeing", "down", "power", t, None, "ev-9")]}
    slot.downtime_versions, slot.downtime_floor = {"U-1": [12, 13]}, {"U-1": 14}
    slot.occupancy_sent, slot.occupancy_version = {"U-1": [["dyeing", 1, 15, None]]}, 16
    slot.dead_lettered, slot.version, slot.next_deadline_ms = ["s:ev-8"], 17, 18
    slot.clock_ms, slot.closed_at_ms, slot.pending_ms, slot.plan = 19, 20, 21, "plan-22"
    assert _roundtrip(slot) == slot
    stored = slot.to_json()
    for key in ("t", "cl", "df", "pd", "pl"):  # absent from slots stored before they existed
        del stored[key]
    old = OrderSlot.from_json(orjson.loads(orjson.dumps(stored)))
    assert (old.clock_ms, old.closed_at_ms, old.downtime_floor, old.pending_ms, old.plan) == (
        0, None, {}, None, None,
    )  # fmt: skip
    assert old.facts == slot.facts
    assert (old.occupancy_version, old.version) == (16, 17)


def test_a_slot_keeps_the_plan_it_was_judged_by_and_another_plan_re_judges_it() -> None:
    """A worker restarted with a shorter `start_within` must see the order as late at once
    (recovery fires the orders whose slot names another plan), not at the old deadline."""
    slot = OrderSlot.new("PO-1")
    OrderProcessor(PLAN).on_order_record(slot, _order(), _src("orders", 0), b"{}", T0)
    assert slot.plan == PLAN.fingerprint
    assert slot.next_deadline_ms == to_ms(T0 + timedelta(hours=24))  # start_within 24h
    stored, _ = peek(orjson.dumps(slot.to_json()))
    assert stored.plan == PLAN.fingerprint
    assert _roundtrip(slot).plan == PLAN.fingerprint

    tighter = PLAN.model_copy(update={"start_within": timedelta(hours=1)})
    assert tighter.fingerprint != PLAN.fingerprint
    slot = _roundtrip(slot)
    effects = OrderProcessor(tighter).on_clock(slot, T0 + timedelta(hours=2))
    assert [(a["type"], a["status"]) for a in effects.alerts] == [("start_overdue", "open")]
    assert effects.alerts[0]["deadline"] == _t(1).replace("+00:00", "Z")[:19] + ".000Z"
    assert slot.plan == tighter.fingerprint


def test_a_plans_fingerprint_is_of_what_it_says_not_of_its_file() -> None:
    text = (Path(schemas.plan.__file__).parent / "plans" / "knitwear.yaml").read_text()
    same = plan_from_mapping(yaml.safe_load("# another comment\n" + text))
    assert same.fingerprint == PLAN.fingerprint
    resorted = yaml.safe_dump(yaml.safe_load(text), sort_keys=True)  # as Helm's toYaml writes
    assert plan_from_mapping(yaml.safe_load(resorted)).fingerprint == PLAN.fingerprint
    other = plan_from_mapping({**yaml.safe_load(text), "grace": "1m"})
    assert other.fingerprint != PLAN.fingerprint


def test_a_batch_past_the_eviction_instant_is_refused_as_one_at_a_time() -> None:
    """The order completes in the batch; a record past completion + retention is order_closed."""
    limits = EngineLimits(closed_order_retention_ms=DAY_MS)
    processor = OrderProcessor(PLAN, limits=limits)
    done = OrderSlot.new("PO-1")
    _complete(processor, done)
    assert done.closed_at_ms is not None
    fresh = OrderSlot.new("PO-1")
    arrivals = _completing()
    late_h = 2 * len(ROUTE) + 24 + 1
    late = _scan("late", "shipping", "started", late_h)
    arrivals.append(Arrival(late, T0 + timedelta(hours=late_h), _src("scans", 99), b"late"))
    effects = processor.on_inputs(fresh, arrivals)
    assert [(d.reason_code, d.raw_value()) for d in effects.dead_letters] == [
        (ReasonCode.ORDER_CLOSED, b"late")
    ]
    assert fresh.closed_at_ms == done.closed_at_ms


def test_a_batch_of_scans_refused_by_the_gate_ends_as_the_slot_would_end_it() -> None:
    """The agents refuse a full order's leading scans from its gate; the first scan the
    gate cannot judge (a known event_id), and all after it, go to the slot."""
    limits = EngineLimits(max_scans_per_order=20)
    rt = SimpleNamespace(
        plan=PLAN, config=SimpleNamespace(snapshots=True, limits=limits, defer_derivations=False)
    )
    agents = OrderAgents(rt)  # type: ignore[arg-type]
    processor = agents.orders
    slot = OrderSlot.new("PO-1")
    processor.on_order_record(slot, _order(), _src("orders", 0), b"{}", T0)
    for n in range(20):
        scan = _scan(f"e-{n}", "yarn_sourcing", "started", 1)
        processor.on_scan(slot, scan, _src("scans", n), b"{}", T0)
    raw = orjson.dumps(slot.to_json())
    agents._remember_gate("PO-1", raw, _roundtrip(slot))

    def arrival(n: int) -> Arrival:
        scan = _scan(f"e-{n}", "dyeing", "started", 2)
        return Arrival(scan, T0, _src("scans", 100 + n), f"raw-{n}".encode(), to_ms(T0))

    batch = [arrival(n) for n in (30, 31, 5, 32)]  # e-5 is known
    letters, rest = agents._gated("PO-1", raw, batch)
    assert rest == batch[2:]
    whole = processor.on_inputs(_roundtrip(slot), batch)
    after = processor.on_inputs(_roundtrip(slot), rest)
    assert [d.encode() for d in letters + after.dead_letters] == [
        d.encode() for d in whole.dead_letters
    ]
    assert [d.reason_code for d in whole.dead_letters] == [ReasonCode.STATE_LIMIT] * 3
    assert agents._gated("PO-1", raw + b" ", batch) == ([], batch)  # another stored value


def test_a_closed_orders_gate_leaves_a_scan_after_its_eviction_instant_to_the_slot() -> None:
    """The per-record engine evicted the order once the clock passed the instant: the
    gate must not answer for the scans that come after that (for this full and closed
    order it would say state_limit; the evicted order says order_closed)."""
    limits = EngineLimits(closed_order_retention_ms=DAY_MS, max_scans_per_order=2 * len(ROUTE))
    rt = SimpleNamespace(
        plan=PLAN, config=SimpleNamespace(snapshots=True, limits=limits, defer_derivations=False)
    )
    agents = OrderAgents(rt)  # type: ignore[arg-type]
    slot = OrderSlot.new("PO-1")
    _complete(agents.orders, slot)
    raw = orjson.dumps(slot.to_json())
    agents._remember_gate("PO-1", raw, _roundtrip(slot))
    evict_at = agents.orders.evict_at_ms(slot)
    assert evict_at is not None
    late = _scan("late", "shipping", "completed", 20)  # before the eviction instant
    now = T0 + timedelta(days=5)
    batch = [Arrival(late, now, _src("scans", 9), b"x", evict_at - 1),
             Arrival(late, now, _src("scans", 10), b"y", evict_at)]  # fmt: skip
    letters, rest = agents._gated("PO-1", raw, batch)
    assert [(d.reason_code, d.raw_value()) for d in letters] == [(ReasonCode.STATE_LIMIT, b"x")]
    assert rest == batch[1:]
    effects = agents.orders.on_inputs(_roundtrip(slot), rest)
    assert effects.evicted
    assert [(d.reason_code, d.raw_value()) for d in effects.dead_letters] == [
        (ReasonCode.ORDER_CLOSED, b"y")
    ]


def _down_unit(units: UnitProcessor) -> UnitSlot:
    """DYE-1, down from 1 h to 5 h (no order has reported a visit yet)."""
    unit = UnitSlot("DYE-1")
    for n, (status, hours) in enumerate([("down", 1), ("up", 5)]):
        record = unit_status_fact(_status(f"s-{n}", status, hours))
        units.on_status(unit, record, {}, T0, _src("unit-status", n), b"{}")
    return unit


def _reports() -> list[Occupancy]:
    """Three orders report visits at DYE-1; PO-2 moves its visit off the downtime, PO-3
    reports twice and the older of its reports arrives last (overtaken), PO-4 leaves."""
    ms = lambda hours: to_ms(T0 + timedelta(hours=hours))  # noqa: E731
    return [
        Occupancy("PO-2", "DYE-1", 1, [["dyeing", 1, ms(0), None]]),
        Occupancy("PO-3", "DYE-1", 1, [["dyeing", 1, ms(2), None]]),
        Occupancy("PO-4", "DYE-1", 1, [["dyeing", 1, ms(3), ms(4)]]),
        Occupancy("PO-2", "DYE-1", 2, [["dyeing", 1, ms(0), ms(0.5)]]),
        Occupancy("PO-3", "DYE-1", 3, [["dyeing", 1, ms(2), ms(3)]]),
        Occupancy("PO-3", "DYE-1", 2, [["dyeing", 1, ms(2), None]]),
        Occupancy("PO-4", "DYE-1", 1, forget=True),
    ]


def test_a_batch_of_reports_ends_where_one_at_a_time_ends_with_one_alert_version() -> None:
    """The unit inbox takes a batch per unit: the same orders in progress, stored entries,
    and last answer per order as one report at a time, and each alert published once."""
    units = UnitProcessor(PLAN)
    one, batched = _down_unit(units), _down_unit(units)
    entries: dict[str, OccupancyEntry | None] = {}
    answers: dict[str, DowntimeAnswer] = {}
    versions = 0
    stored_now = lambda: {k: v for k, v in entries.items() if v is not None}  # noqa: E731
    for report in _reports():
        stored = {report.order_id: entries.get(report.order_id)}
        effects = units.on_occupancies(one, [report], stored, T0, stored_now)
        entries.update(effects.changed_entries)
        entries.update(dict.fromkeys(effects.forgotten))
        answers.update({a.order_id: a for a in effects.answers})
        versions += len(effects.alerts)

    stored = dict.fromkeys(["PO-2", "PO-3", "PO-4"])
    effects = units.on_occupancies(batched, _reports(), stored, T0, dict)

    # PO-2 moved off the downtime; PO-4 left the state, its final visit stays listed
    assert batched.published == one.published
    (alert,) = effects.alerts  # one version of the downtime's alert for the whole batch ...
    assert alert["details"]["orders_in_progress"] == ["PO-3", "PO-4"]
    assert alert["details"]["orders_in_progress_count"] == 2
    assert versions > 1  # ... where one report at a time published each intermediate list
    kept = {k: v for k, v in entries.items() if v is not None}
    assert {k: v.to_json() for k, v in effects.changed_entries.items()} == {
        k: v.to_json() for k, v in kept.items()
    }
    assert effects.changed_entries["PO-4"].frozen  # kept while the downtime is
    assert effects.forgotten == set()
    assert effects.answers == [answers["PO-2"], answers["PO-3"], answers["PO-4"]]
    assert [a.version for a in effects.answers] == [(2, 2), (2, 1), (2, 1)]  # PO-3 v3: same answer
    assert effects.changed


def test_a_redelivered_batch_of_reports_re_sends_the_answers_and_changes_nothing() -> None:
    units = UnitProcessor(PLAN)
    unit = _down_unit(units)
    first = units.on_occupancies(
        unit, _reports(), dict.fromkeys(["PO-2", "PO-3", "PO-4"]), T0, dict
    )
    stored = {k: OccupancyEntry.from_json(orjson.loads(orjson.dumps(v.to_json())))
              for k, v in first.changed_entries.items()}  # fmt: skip
    # PO-2 v2, PO-3 v3 again
    again = units.on_occupancies(unit, _reports()[3:5], stored, T0, lambda: stored)
    assert again.alerts == []
    assert not again.changed
    assert [(a.order_id, a.version) for a in again.answers] == [("PO-2", (2, 2)), ("PO-3", (2, 3))]


def test_a_units_overlap_test_on_epoch_ms_is_the_rules_overlap() -> None:
    """The unit compares stored visits (epoch ms) with its downtimes as integers: every
    case of RULES.md's overlap, open ends and unknown starts included, agrees with
    `Downtime.overlaps` on the datetimes, and the downtimes keep their order."""
    instants: list[int | None] = [None, 1_000, 1_999, 2_000, 2_001, 3_000, 4_000, 5_001]
    downtimes = [
        Downtime("U-1", "knitting", "down", None, from_ms(start), end, f"d{start}-{end}")
        for start in (2_000, 3_000)
        for end in (None, from_ms(3_000), from_ms(4_000))
        if end is None or end > from_ms(start)
    ]
    spans = _spans(downtimes)
    cases = 0
    for first in instants:
        for last in instants:
            for extra in ([], [["dyeing", 1, 5_000, None]]):
                visits: list[list[Any]] = [["knitting", 1, first, last], *extra]
                expected = [
                    d
                    for d in downtimes
                    if any(
                        d.overlaps(
                            None if v[2] is None else from_ms(v[2]),
                            None if v[3] is None else from_ms(v[3]),
                        )
                        for v in visits
                    )
                ]
                assert _overlapping(spans, visits) == expected, visits
                cases += 1
    assert cases == 2 * len(instants) ** 2


class _Outputs:
    """The runtime's output sender, keeping what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushes = 0

    @property
    def pending(self) -> int:
        return len(self.sent)

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        self.flushes += 1


class _Runtime:
    """What `OrderAgents` uses of `EngineRuntime`, on a dict table and the event clock."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        self.config = SimpleNamespace(
            snapshots=True, limits=EngineLimits(), defer_derivations=False
        )
        self.clock = EngineClock("event")
        self.deadlines = DeadlineIndex()
        self.order_table: dict[str, bytes] = {}
        self.outputs = _Outputs()
        self.out = SimpleNamespace(
            alerts="alerts", state="state", dead_letters="dl", customer_inbox="ci",
            unit_inbox="ui", order_inbox="oi",
        )  # fmt: skip
        self.scans_topic = SimpleNamespace(get_topic_name=lambda: "scans")
        self.orders_topic = SimpleNamespace(get_topic_name=lambda: "orders")
        self.order_inbox = SimpleNamespace(get_topic_name=lambda: "oi")
        self.turn = asyncio.Lock()
        self.alerts: list[dict[str, Any]] = []

    def active_partitions(self, _topic: Any) -> set[int]:
        return {0}

    async def committed_offsets(self, _partitions: Any) -> None:
        return None  # unknown: recovery publishes every stored snapshot mark again

    def get(self, table: dict[str, bytes], key: str) -> bytes | None:
        return table.get(key)

    def put(self, table: dict[str, bytes], key: str, value: bytes) -> None:
        table[key] = value

    def encoded(self, value: Any) -> bytes:
        return orjson.dumps(value)

    def send_alerts(self, alerts: Any, *, reannounce: bool = False) -> None:
        if not reannounce:
            self.alerts += list(alerts)

    def send_dead_letters(self, letters: Any) -> None:
        list(letters)

    def join(self, _topic: str, _message: Any) -> None:
        pass


def test_recovery_fires_at_once_the_orders_another_plan_judged_and_only_those() -> None:
    """The worker's side of a plan change (the processor's is tested above): recovery
    puts an order judged by another plan at the clock's now, a join answer stored
    before its derivation keeps it there, and firing it re-judges it under this plan."""
    tighter = PLAN.model_copy(update={"start_within": timedelta(hours=1)})
    old, same = OrderSlot.new("PO-1"), OrderSlot.new("PO-2")
    OrderProcessor(PLAN).on_order_record(old, _order(), _src("orders", 0), b"{}", T0)
    OrderProcessor(tighter).on_order_record(
        same, _order(order_id="PO-2"), _src("orders", 1), b"{}", T0
    )
    for slot in (old, same):
        slot.partition, slot.clock_ms = 0, to_ms(T0 + timedelta(hours=2))
    rt = _Runtime(tighter)
    rt.order_table = {s.facts.order_id: orjson.dumps(s.to_json()) for s in (old, same)}
    agents = OrderAgents(rt)  # type: ignore[arg-type]
    now = to_ms(T0 + timedelta(hours=2))

    async def main() -> None:
        await agents.on_recovered()
        # PO-2 was judged by this plan: its own deadline (placed + 1 h, already due)
        assert rt.deadlines._due == {"PO-1": now, "PO-2": to_ms(T0 + timedelta(hours=1))}
        # a join answer stored before PO-1 is derived again does not bring back the
        # old plan's deadline (placed + 24 h)
        stored = OrderSlot.from_json(orjson.loads(rt.order_table["PO-1"]))
        agents.apply(stored, Effects(changed=True))
        assert rt.deadlines._due["PO-1"] == now
        await agents.fire_due(0, now)

    asyncio.run(main())
    opened = sorted((a["order_id"], a["type"], a["status"]) for a in rt.alerts)
    assert opened == [("PO-1", "start_overdue", "open"), ("PO-2", "start_overdue", "open")]
    assert peek(rt.order_table["PO-1"])[0].plan == tighter.fingerprint
    assert rt.deadlines._due.get("PO-1") != now  # judged now: its next deadline, if any


def test_recovery_publishes_the_snapshots_whose_step_input_is_not_committed() -> None:
    """A snapshot is marked with its step's input; recovery publishes it again (the
    very snapshot the step sent) only while that input is not committed, and every
    marked one when the committed offsets are unknown."""
    processor = OrderProcessor(PLAN)
    slots, sent = {}, {}
    for n, order_id in enumerate(["PO-1", "PO-2", "PO-3"]):
        slot = OrderSlot.new(order_id)
        effects = processor.on_order_record(
            slot, _order(order_id=order_id), _src("orders", n), b"{}", T0
        )
        slot.partition = 0
        sent[order_id] = effects.snapshot
        slots[order_id] = slot
    slots["PO-1"].snapshot_at = ["o", 0]  # committed (offset 2 is the next to read)
    slots["PO-2"].snapshot_at = ["o", 2]  # not committed
    # PO-3: no mark (stored before marks were kept)

    def recovered(committed: dict[tuple[str, int], int | None] | None) -> dict[str, bytes]:
        rt = _Runtime(PLAN)
        rt.order_table = {k: orjson.dumps(s.to_json()) for k, s in slots.items()}

        async def offsets(_partitions: Any) -> dict[tuple[str, int], int | None] | None:
            return committed

        rt.committed_offsets = offsets  # type: ignore[method-assign]
        asyncio.run(OrderAgents(rt).on_recovered())  # type: ignore[arg-type]
        return {key.decode(): value for topic, key, value in rt.outputs.sent
                if topic == "state" and key is not None}  # fmt: skip

    assert recovered({("orders", 0): 2, ("scans", 0): None, ("oi", 0): None}) == {
        "PO-2": sent["PO-2"]
    }
    assert recovered({("orders", 0): None}) == {"PO-1": sent["PO-1"], "PO-2": sent["PO-2"]}
    assert recovered(None) == {"PO-1": sent["PO-1"], "PO-2": sent["PO-2"]}


class _Input:
    """A record's event as faust hands it (weak-referable, as `acting_for` needs)."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition, offset=offset)


def test_a_deadlines_snapshot_is_published_again_until_an_input_after_its_step_commits() -> None:
    """On the event clock a deadline fires for a partition in a step that may have read
    nothing of it, acting for the partition's last input, which may be committed already.
    Marked with that input, the snapshot, if lost, was not published at recovery (only at
    the order's next change: a quiet order's state stayed stale). Marked one past it, it
    is published again until a later input of that topic and partition is committed."""
    slot = OrderSlot.new("PO-1")
    OrderProcessor(PLAN).on_order_record(slot, _order(), _src("orders", 4), b"{}", T0)
    slot.partition, slot.clock_ms = 0, to_ms(T0)
    due = slot.next_deadline_ms
    assert due is not None
    rt = _Runtime(PLAN)
    rt.order_table = {"PO-1": orjson.dumps(slot.to_json())}
    rt.deadlines.schedule(0, due, "PO-1")
    last_read = _Input("orders", 0, 4)  # committed before the deadline's step: next is 5

    async def fire() -> None:
        with EngineRuntime.acting_for(last_read):
            await OrderAgents(rt).fire_due(0, due)  # type: ignore[arg-type]

    asyncio.run(fire())
    fired = [value for topic, _key, value in rt.outputs.sent if topic == "state"]
    assert len(fired) == 1
    assert peek(rt.order_table["PO-1"])[0].snapshot_at == ["o", 5]

    def recovered(committed_next: int) -> list[bytes]:
        after = _Runtime(PLAN)
        after.order_table = dict(rt.order_table)

        async def offsets(_partitions: Any) -> dict[tuple[str, int], int | None]:
            return {("orders", 0): committed_next, ("scans", 0): None, ("oi", 0): None}

        after.committed_offsets = offsets  # type: ignore[method-assign]
        asyncio.run(OrderAgents(after).on_recovered())  # type: ignore[arg-type]
        return [value for topic, _key, value in after.outputs.sent if topic == "state"]

    assert recovered(5) == fired  # the input it acted for committed, nothing after it
    assert recovered(6) == []  # a later input committed: its step's outputs were delivered
