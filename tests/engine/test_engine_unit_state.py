"""A unit's bounded state keeps what visits still need (CONTRACT v1.2 "Bounded
state", issue 9 item 3), without a broker: the order and unit processors wired
together in memory the way the agents wire them over the internal topics.

What a unit keeps must not depend on whether an order's visit reaches it before
or after a flood of status records (RULES.md: the alerts are a function of the
facts, never of arrival order across topics).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.dead_letter import DeadLetterSource, ReasonCode
from schemas.orders import OrderRecord
from schemas.plan import load_plan
from schemas.scans import ScanEvent
from schemas.unit_status import UnitStatus
from schemas.validation import decode_input
from streams.engine.limits import DAY_MS, EngineLimits
from streams.engine.messages import Occupancy
from streams.engine.order_processor import Effects, OrderProcessor
from streams.engine.order_slot import OrderSlot
from streams.engine.unit_processor import OccupancyEntry, UnitEffects, UnitProcessor, UnitSlot
from streams.rules.alert_json import alert_json
from streams.rules.downtimes import build_downtimes
from streams.rules.evaluate import ORDERS_LISTED, UnitOccupancy, evaluate_unit
from streams.rules.facts import to_ms
from streams.rules.record_facts import unit_status_fact

PLAN = load_plan(None)
T0 = datetime(2027, 3, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=3)
"""One clock for every input: the arrival order is what these tests vary, not the clock."""
UNIT = "DYE-H3"


def _t(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _decode(topic: str, value: dict[str, Any]) -> Any:
    return decode_input(topic, json.dumps(value).encode(), plan=PLAN)


def _order(order_id: str) -> OrderRecord:
    record: OrderRecord = _decode("orders", {
        "op": "created", "order_id": order_id, "customer_id": "C-1", "product": "crewneck",
        "quantity": 100, "placed_at": _t(0), "due_at": "2027-04-30T00:00:00Z"})  # fmt: skip
    return record


def _scan(order_id: str, n: int, stage: str, action: str, unit: str, at: float) -> ScanEvent:
    scan: ScanEvent = _decode("scans", {
        "event_id": f"{order_id}-{n}", "order_id": order_id, "stage": stage, "action": action,
        "unit_id": unit, "event_time": _t(at)})  # fmt: skip
    return scan


def _status(k: int, at: float, status: str | None = None) -> UnitStatus:
    record: UnitStatus = _decode("unit-status", {
        "event_id": f"u-{k}", "unit_id": UNIT, "stage": "dyeing",
        "status": status or ("down" if k % 2 == 0 else "up"), "reason": "power_outage",
        "event_time": _t(at)})  # fmt: skip
    return record


def _flood(n: int, every_s: float = 10, start_s: float = 14_400) -> list[UnitStatus]:
    """`n` status records of the unit, down/up alternately every `every_s` seconds."""
    return [_status(k, start_s + every_s * k) for k in range(n)]


def _visit_inputs(order_id: str = "PO-V", at: float = 14_400) -> list[Any]:
    """An order whose dyeing visit at the unit lasts 35 s from `at` (H3's PO-V)."""
    return [
        _order(order_id),
        _scan(order_id, 0, "yarn_sourcing", "started", "YARN-1", 3600),
        _scan(order_id, 1, "yarn_sourcing", "completed", "YARN-1", 7200),
        _scan(order_id, 2, "dyeing", "started", UNIT, at),
        _scan(order_id, 3, "dyeing", "completed", UNIT, at + 35),
    ]


@dataclass
class Engine:
    """The order and unit processors and their tables, joined in memory.

    Every slot goes through its JSON form whenever the agents would store it,
    and the internal messages are delivered at once (a drained inbox).
    """

    limits: EngineLimits = field(default_factory=EngineLimits)
    orders: dict[str, OrderSlot] = field(default_factory=dict)
    units: dict[str, UnitSlot] = field(default_factory=dict)
    occupancy: dict[str, dict[str, OccupancyEntry]] = field(default_factory=dict)
    """unit_id -> order_id -> the order's visits there (the occupancy table)."""
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The latest version of every alert published (the alerts topic, compacted)."""
    dead_letters: dict[str, str] = field(default_factory=dict)
    largest_unit_value: int = 0
    offsets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.order_proc = OrderProcessor(PLAN, limits=self.limits)
        self.unit_proc = UnitProcessor(PLAN, self.limits)

    @property
    def unit(self) -> UnitSlot:
        return self.units.get(UNIT) or UnitSlot(UNIT)

    def _source(self, topic: str) -> DeadLetterSource:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        return DeadLetterSource(kind="kafka", topic=topic, partition=0, offset=offset)

    def feed(self, records: Iterable[Any]) -> None:
        for record in records:
            if isinstance(record, UnitStatus):
                source = self._source("unit-status")
                unit = self.units.setdefault(record.unit_id, UnitSlot(record.unit_id))
                occupancy = dict(self.occupancy.get(record.unit_id, {}))
                effects = self.unit_proc.on_status(
                    unit, unit_status_fact(record), occupancy, NOW, source, b"{}"
                )
                self._unit(unit, effects)
                continue
            slot = self.orders.setdefault(record.order_id, OrderSlot.new(record.order_id))
            if isinstance(record, ScanEvent):
                effects = self.order_proc.on_scan(slot, record, self._source("scans"), b"{}", NOW)
            else:
                source = self._source("orders")
                effects = self.order_proc.on_order_record(slot, record, source, b"{}", NOW)
            self._order(slot, effects)

    def _order(self, slot: OrderSlot, effects: Effects) -> None:
        self.orders[slot.facts.order_id] = OrderSlot.from_json(
            orjson.loads(orjson.dumps(slot.to_json()))
        )
        self._publish(effects.alerts, effects.dead_letters)
        for message in effects.occupancy:
            self._occupancy(message)

    def _occupancy(self, message: Occupancy) -> None:
        entries = self.occupancy.setdefault(message.unit_id, {})
        unit = self.units.setdefault(message.unit_id, UnitSlot(message.unit_id))
        entry = entries.get(message.order_id)
        effects = self.unit_proc.on_occupancies(
            unit, [message], {message.order_id: entry}, NOW, lambda: dict(entries)
        )
        self._unit(unit, effects, store=True)

    def _unit(self, unit: UnitSlot, effects: UnitEffects, store: bool = False) -> None:
        if store or effects.changed or effects.alerts:
            value = orjson.dumps(unit.to_json())
            if unit.unit_id == UNIT:
                self.largest_unit_value = max(self.largest_unit_value, len(value))
            self.units[unit.unit_id] = UnitSlot.from_json(orjson.loads(value))
        entries = self.occupancy.setdefault(unit.unit_id, {})
        entries.update(effects.changed_entries)
        for order_id in effects.forgotten:
            entries.pop(order_id, None)
        self._publish(effects.alerts, effects.dead_letters)
        for answer in effects.answers:
            slot = self.orders[answer.order_id]
            self._order(slot, self.order_proc.on_downtimes(slot, answer, NOW))

    def _publish(self, alerts: Iterable[dict[str, Any]], letters: Iterable[Any]) -> None:
        for alert in alerts:
            self.alerts[alert["alert_id"]] = alert
        for letter in letters:
            self.dead_letters[letter.dead_letter_id] = letter.reason_code.value

    def final(self) -> dict[str, dict[str, Any]]:
        """What `chainwatch replay` prints: the latest version of each alert, retracted
        ones left out (a visit first reported open, then closed, retracts on the way)."""
        return {k: a for k, a in self.alerts.items() if a["status"] != "retracted"}

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [a for a in self.final().values() if a["type"] == kind]


def _run(*parts: list[Any], limits: EngineLimits | None = None) -> Engine:
    engine = Engine(limits or EngineLimits())
    for part in parts:
        engine.feed(part)
    return engine


@pytest.mark.slow
def test_a_visit_before_or_after_a_status_flood_ten_times_the_cap_gets_the_same_alerts() -> None:
    """H3's unit: PO-V's 35 s visit overlaps the first two of 500 downtimes.

    1,000 records, ten times the unit's cap of 100: the visit in the middle comes when
    the unit has been full for 400 records. H3's 5,000 (the opt-in broker test,
    test_engine_bounded_state.py) refused 4,900 here the same way, one by one, each a
    fold tried and refused: ~5x this test's time, 58 s of the suite under load.
    """
    visit, flood = _visit_inputs(), _flood(1000)
    before = _run(visit, flood)
    after = _run(flood, visit)
    middle = _run(flood[:500], visit, flood[500:])

    disrupted = before.of_type("order_disrupted")
    assert sorted(a["details"]["downtime_event_id"] for a in disrupted) == ["u-0", "u-2"]
    for other in (after, middle):
        assert other.final() == before.final()
        assert other.dead_letters == before.dead_letters
        assert other.unit.to_json() == before.unit.to_json()
    # bounded: the unit keeps its first 100 records (nothing ended 30 days before
    # its clock), the 900 after them are refused in log order, not dropped
    limit = EngineLimits().max_unit_records
    assert limit * 10 == len(flood)
    assert [r.event_id for r in before.unit.records] == [f"u-{k}" for k in range(limit)]
    assert list(before.dead_letters.values()) == [ReasonCode.STATE_LIMIT.value] * (1000 - limit)
    assert len(before.of_type("unit_down")) == limit // 2
    assert max(e.largest_unit_value for e in (before, after, middle)) < 60_000


@pytest.mark.slow
def test_a_unit_folds_what_ended_before_its_lookback_and_keeps_what_a_known_visit_overlaps() -> (
    None
):
    """A month of half-hourly downtimes and one order's short visit on day 10."""
    limits = EngineLimits(max_unit_records=100, unit_lookback_ms=DAY_MS)
    month = _flood(2 * 24 * 30, every_s=1800)
    visit = _visit_inputs(at=14_400 + 1800 * 2 * 24 * 10)

    first = _run(visit, month, limits=limits)
    assert first.dead_letters == {}  # bounded by folding alone: nothing refused
    assert len(first.of_type("unit_down")) == 24 * 30  # every downtime alerted, final
    assert {a["status"] for a in first.of_type("unit_down")} == {"resolved"}
    held = [f"u-{2 * 24 * 10}", f"u-{2 * 24 * 10 + 1}"]  # the downtime the visit overlaps
    kept = [r.event_id for r in first.unit.records]
    assert kept[:2] == held
    assert len(kept) <= 2 + 2 * 24 + 2  # and a day of records: what the lookback keeps
    assert first.largest_unit_value < 40_000
    assert first.unit.floor is not None
    assert first.unit.floor[0] > to_ms(T0 + timedelta(days=28))
    # an order told of the fold still retracts, never forgets, alerts of a kept downtime
    answer_floor = first.unit.answer_floor_ms()
    assert answer_floor is not None
    assert answer_floor < to_ms(first.unit.records[0].event_time)
    assert len(first.of_type("order_disrupted")) == 1
    # the same visit reported 20 days after its downtime ended: folded by then
    last = _run(month, visit, limits=limits)
    assert last.of_type("order_disrupted") == []
    assert [r.event_id for r in last.unit.records] == kept[2:]


@pytest.mark.slow
def test_an_open_visit_holds_back_the_fold_and_a_full_unit_refuses_in_log_order() -> None:
    """An open visit needs every later downtime: kept until the cap, then refused."""
    limits = EngineLimits(max_unit_records=60, unit_lookback_ms=DAY_MS)
    open_visit = _visit_inputs()[:-1]  # started, never completed
    week = _flood(2 * 24 * 7, every_s=1800)
    early = _run(open_visit, week, limits=limits)
    assert [r.event_id for r in early.unit.records] == [f"u-{k}" for k in range(60)]
    assert early.unit.floor is None
    assert len(early.dead_letters) == 2 * 24 * 7 - 60
    assert len(early.of_type("order_disrupted")) == 30
    # without the visit the unit folds by its lookback and refuses nothing; a visit
    # reported a week late then misses what was folded (the documented limit)
    late = _run(week, open_visit, limits=limits)
    assert late.dead_letters == {}
    assert late.unit.records[0].event_id != "u-0"
    assert not {"u-0", "u-2"} & {a["details"]["downtime_event_id"] for a in
                                   late.of_type("order_disrupted")}  # fmt: skip


def test_a_full_unit_still_takes_the_up_that_ends_its_open_downtime() -> None:
    limits = EngineLimits(max_unit_records=3)
    engine = _run(_visit_inputs()[:-1], limits=limits)  # an open visit: nothing folds
    engine.feed([_status(0, 14_500, "down"), _status(1, 14_600, "up"),
                 _status(2, 14_700, "degraded"), _status(3, 14_800, "down"),
                 _status(4, 14_900, "up"), _status(5, 15_000, "up")])  # fmt: skip
    assert [r.event_id for r in engine.unit.records] == ["u-0", "u-1", "u-2", "u-4"]
    assert sorted(engine.dead_letters.values()) == ["state_limit", "state_limit"]  # u-3, u-5
    assert {a["status"] for a in engine.alerts.values() if a["type"].startswith("unit_")} == {
        "resolved"
    }


def test_a_record_older_than_the_fold_horizon_is_refused_but_a_redelivery_is_not() -> None:
    limits = EngineLimits(unit_lookback_ms=DAY_MS)
    processor = UnitProcessor(PLAN, limits)
    slot = UnitSlot(UNIT)
    flood = _flood(2 * 24 * 3, every_s=1800)

    def src(offset: int) -> DeadLetterSource:
        return DeadLetterSource(kind="kafka", topic="unit-status", partition=0, offset=offset)

    for offset, record in enumerate(flood):
        processor.on_status(slot, unit_status_fact(record), {}, NOW, src(offset), b"{}")
    assert slot.floor is not None
    folded = flood[0]
    again = processor.on_status(slot, unit_status_fact(folded), {}, NOW, src(0), b"{}")
    assert again.dead_letters == []
    late = processor.on_status(
        slot, unit_status_fact(_status(9999, 14_400 + 1, "down")), {}, NOW, src(len(flood)), b"x"
    )
    assert [d.reason_code for d in late.dead_letters] == [ReasonCode.STATE_LIMIT]
    assert not late.changed


def test_an_evicted_order_stays_in_the_orders_in_progress_of_the_unit_alerts_it_was_in() -> None:
    """CONTRACT v1.2: an evicted order's alerts are final, and so is its place in a
    unit alert's `orders_in_progress` when the unit derives that alert again (here:
    the `up` that ends the downtime comes after the order left the state)."""
    engine = _run(
        _visit_inputs("PO-V"), _visit_inputs("PO-W"), [_status(0, 14_410, "down")],
        limits=EngineLimits(closed_order_retention_ms=DAY_MS),
    )  # fmt: skip
    [down] = engine.of_type("unit_down")
    assert down["details"]["orders_in_progress"] == ["PO-V", "PO-W"]
    cancel = {"op": "cancelled", "order_id": "PO-V", "event_time": _t(20_000)}
    engine.feed([_decode("orders", cancel)])
    slot = engine.orders["PO-V"]
    evicted = engine.order_proc.on_clock(slot, T0 + timedelta(days=2))
    assert evicted.evicted
    engine._order(slot, evicted)
    assert engine.occupancy[UNIT]["PO-V"].frozen  # the unit keeps its final visits

    engine.feed([_status(1, 14_500, "up")])
    [resolved] = engine.of_type("unit_down")
    assert resolved["status"] == "resolved"
    assert resolved["details"]["orders_in_progress"] == ["PO-V", "PO-W"]


def _unit_src(offset: int) -> DeadLetterSource:
    return DeadLetterSource(kind="kafka", topic="unit-status", partition=0, offset=offset)


def _visit(order_id: str, start_s: float, end_s: float | None) -> Occupancy:
    start = to_ms(T0 + timedelta(seconds=start_s))
    end = None if end_s is None else to_ms(T0 + timedelta(seconds=end_s))
    return Occupancy(order_id, UNIT, 1, [["dyeing", 1, start, end]])


def test_a_downtime_over_thousands_of_orders_keeps_the_unit_value_bounded() -> None:
    """CONTRACT v1.2 "Bounded state": the unit kept every overlapping order's id in its
    value (and in its alert's); 9,000 orders at a down unit passed the 900 KB limit and
    every later record for the unit failed, its `up` included: the alerts stayed open.
    Now the alert lists the first ids and counts all, as the reference engine does."""
    processor = UnitProcessor(PLAN)
    slot = UnitSlot(UNIT)
    entries: dict[str, OccupancyEntry] = {}

    def status(offset: int, record: UnitStatus) -> UnitEffects:
        effects = processor.on_status(
            slot, unit_status_fact(record), dict(entries), NOW, _unit_src(offset), b"{}"
        )
        for order_id in effects.forgotten:
            entries.pop(order_id)
        return effects

    status(0, _status(0, 14_400, "down"))
    ids = [f"FLOOD-{k:06d}-" + "x" * 51 for k in range(3_000)]
    largest = 0
    for start in range(0, len(ids), 500):  # batches, as the unit inbox takes them
        reports = [_visit(o, 15_000, None) for o in ids[start : start + 500]]
        effects = processor.on_occupancies(
            slot, reports, dict.fromkeys(r.order_id for r in reports), NOW, lambda: dict(entries)
        )
        entries.update(effects.changed_entries)
        largest = max(largest, len(orjson.dumps(slot.to_json())))
    assert largest < 20_000  # was ~400 KB here, and growing with every order
    (down,) = effects.alerts
    assert down["details"]["orders_in_progress"] == sorted(ids)[:ORDERS_LISTED]
    assert down["details"]["orders_in_progress_count"] == 3_000
    assert len(orjson.dumps(down)) < 5_000

    (resolved,) = status(1, _status(1, 20_000, "up")).alerts
    assert resolved["status"] == "resolved"
    assert resolved["details"]["orders_in_progress_count"] == 3_000
    # the reference engine's unit alert lists and counts the same orders
    occupancy = [UnitOccupancy(UNIT, o, "dyeing", 1, T0 + timedelta(seconds=15_000), None)
                 for o in ids]  # fmt: skip
    downtimes = build_downtimes(slot.records)
    (reference,) = evaluate_unit(UNIT, downtimes, PLAN, NOW, occupancy).values()
    assert alert_json(reference)["details"] == resolved["details"]


def test_a_listed_order_that_leaves_the_downtime_makes_room_for_the_next_id() -> None:
    processor = UnitProcessor(PLAN)
    slot = UnitSlot(UNIT)
    entries: dict[str, OccupancyEntry] = {}
    processor.on_status(slot, unit_status_fact(_status(0, 14_400, "down")), {}, NOW,
                        _unit_src(0), b"{}")  # fmt: skip
    ids = [f"PO-{k:03d}" for k in range(ORDERS_LISTED + 5)]
    effects = processor.on_occupancies(
        slot, [_visit(o, 15_000, None) for o in ids], dict.fromkeys(ids), NOW, dict
    )
    entries.update(effects.changed_entries)
    moved = Occupancy("PO-000", UNIT, 2, [["dyeing", 1, to_ms(T0), to_ms(T0) + 1_000]])
    (alert,) = processor.on_occupancies(
        slot, [moved], {"PO-000": entries["PO-000"]}, NOW, lambda: dict(entries)
    ).alerts
    assert alert["details"]["orders_in_progress"] == ids[1 : ORDERS_LISTED + 1]
    assert alert["details"]["orders_in_progress_count"] == len(ids) - 1


def test_an_order_that_left_the_state_stays_counted_and_its_entry_goes_with_the_fold() -> None:
    limits = EngineLimits(unit_lookback_ms=DAY_MS)
    processor = UnitProcessor(PLAN, limits)
    slot = UnitSlot(UNIT)
    entries: dict[str, OccupancyEntry] = {}
    processor.on_status(slot, unit_status_fact(_status(0, 14_400, "down")), {}, NOW,
                        _unit_src(0), b"{}")  # fmt: skip
    report = _visit("PO-GONE", 15_000, 16_000)
    entries.update(processor.on_occupancies(slot, [report], {"PO-GONE": None}, NOW,
                                            dict).changed_entries)  # fmt: skip
    forget = Occupancy("PO-GONE", UNIT, 1, forget=True)
    left = processor.on_occupancies(slot, [forget], dict(entries), NOW, lambda: dict(entries))
    assert left.forgotten == set()
    assert left.changed_entries["PO-GONE"].frozen
    entries.update(left.changed_entries)
    late = Occupancy("PO-GONE", UNIT, 2, [["dyeing", 1, to_ms(T0), to_ms(T0) + 1]])
    assert processor.on_occupancies(slot, [late], dict(entries), NOW, dict).changed_entries == {}

    up = processor.on_status(slot, unit_status_fact(_status(1, 20_000, "up")), dict(entries),
                             NOW, _unit_src(1), b"{}")  # fmt: skip
    (resolved,) = up.alerts
    assert resolved["details"]["orders_in_progress"] == ["PO-GONE"]
    assert up.answers == []  # a frozen order is answered no more
    # two days on the downtime is folded away (no order in the state needs it) ...
    later = processor.on_status(
        slot, unit_status_fact(_status(2, 20_000 + 2 * 86_400, "down")), dict(entries),
        NOW, _unit_src(2), b"{}",
    )  # fmt: skip
    assert [r.event_id for r in slot.records] == ["u-2"]
    assert later.forgotten == {"PO-GONE"}  # ... and the frozen entry with it


def test_a_unit_value_stored_with_whole_lists_keeps_the_orders_that_left_the_state() -> None:
    """A unit stored before the lists were derived from the entries: its lists named
    every order, and an order evicted since has no entry; it stays listed."""
    processor = UnitProcessor(PLAN)
    slot = UnitSlot(UNIT)
    processor.on_status(slot, unit_status_fact(_status(0, 14_400, "down")), {}, NOW,
                        _unit_src(0), b"{}")  # fmt: skip
    stored = slot.to_json()
    stored["ip"] = {"u-0": ["PO-EVICTED", "PO-LIVE"]}
    old = UnitSlot.from_json(orjson.loads(orjson.dumps(stored)))
    live = OccupancyEntry(1, _visit("PO-LIVE", 15_000, None).visits)
    (resolved,) = processor.on_status(
        old, unit_status_fact(_status(1, 20_000, "up")), {"PO-LIVE": live}, NOW,
        _unit_src(1), b"{}",
    ).alerts  # fmt: skip
    assert resolved["details"]["orders_in_progress"] == ["PO-EVICTED", "PO-LIVE"]
    assert old.in_progress == {"u-0": ["PO-EVICTED"]}


def test_a_report_that_comes_again_after_a_crash_is_counted_once() -> None:
    """The unit keeps each downtime's count and first ids, brought up to date report by
    report; the entries and the unit's value are written to two changelogs, and a
    crash may keep either. Each report is counted once: the unit keeps the position
    of the last one it counted, each entry the position of the report that wrote it."""
    processor = UnitProcessor(PLAN)
    slot = UnitSlot(UNIT)
    processor.on_status(slot, unit_status_fact(_status(0, 14_400, "down")), {}, NOW,
                        _unit_src(0), b"{}")  # fmt: skip
    ids = ["PO-0", "PO-1", "PO-2"]
    joined = processor.on_occupancies(
        slot, [_visit(o, 15_000, None) for o in ids], dict.fromkeys(ids), NOW, dict,
        [(4, 0), (4, 1), (4, 2)],
    )  # fmt: skip
    entries = dict(joined.changed_entries)
    kept = orjson.dumps(slot.to_json())  # the unit's value after the three joined
    moved = Occupancy("PO-0", UNIT, 2, [["dyeing", 1, to_ms(T0), to_ms(T0) + 1_000]])

    # the entry was stored, the unit's value was not: PO-0 left, counted again
    lost = UnitSlot.from_json(orjson.loads(kept))
    first = processor.on_occupancies(lost, [moved], {"PO-0": entries["PO-0"]}, NOW, dict,
                                     [(5, 0)])  # fmt: skip
    stored = {**entries, **first.changed_entries}
    again = UnitSlot.from_json(orjson.loads(kept))
    redelivered = processor.on_occupancies(
        again, [moved], {"PO-0": stored["PO-0"]}, NOW, lambda: dict(stored), [(5, 0)]
    )
    assert again.listing("u-0") == lost.listing("u-0") == (["PO-1", "PO-2"], 2)
    assert redelivered.changed

    # the unit's value was stored, the entry was not: PO-0 is not counted twice
    late = _visit("PO-9", 15_500, None)
    newer = UnitSlot.from_json(orjson.loads(kept))
    processor.on_occupancies(newer, [late], {"PO-9": None}, NOW, dict, [(6, 0)])
    assert newer.listing("u-0") == (["PO-0", "PO-1", "PO-2", "PO-9"], 4)
    processor.on_occupancies(newer, [late], {"PO-9": None}, NOW, dict, [(6, 0)])
    assert newer.listing("u-0") == (["PO-0", "PO-1", "PO-2", "PO-9"], 4)


def test_a_status_record_whose_unit_value_a_crash_lost_tells_the_orders_again() -> None:
    """A status record's step writes the answered entries and the unit's value to two
    changelogs and sends the answers in bundles to the orders' inbox (OutputSender's
    flush): three topic partitions, each acknowledged on its own. A crash keeps the
    entries and loses the unit's value and the answers; the record comes again (its
    offset was not committed), new to the unit's value, while each entry says it was
    told. The orders are told again: their downtimes and alerts are as without the crash.
    """
    down = _status(0, 14_410, "down")
    inside = _visit_inputs("PO-W", 14_000)[:-1]  # still in the unit when it goes down
    clean = _run(_visit_inputs(), inside, [down])
    engine = _run(_visit_inputs(), inside)
    kept = orjson.dumps(engine.unit.to_json())

    crashed = UnitSlot.from_json(orjson.loads(kept))
    stored = dict(engine.occupancy[UNIT])
    effects = engine.unit_proc.on_status(
        crashed, unit_status_fact(down), stored, NOW, _unit_src(0), b"{}"
    )
    assert sorted(a.order_id for a in effects.answers) == ["PO-V", "PO-W"]
    engine.occupancy[UNIT].update(effects.changed_entries)  # only the entries were kept
    engine.units[UNIT] = UnitSlot.from_json(orjson.loads(kept))
    engine.feed([down])  # at offset 0 again

    for order_id in ("PO-V", "PO-W"):
        assert engine.orders[order_id].downtimes == clean.orders[order_id].downtimes
    assert engine.final() == clean.final()
    assert {a["order_id"] for a in engine.of_type("order_disrupted")} == {"PO-V", "PO-W"}


def test_a_unit_value_stored_before_the_counts_were_kept_is_counted_from_the_entries() -> None:
    processor = UnitProcessor(PLAN)
    slot = UnitSlot(UNIT)
    processor.on_status(slot, unit_status_fact(_status(0, 14_400, "down")), {}, NOW,
                        _unit_src(0), b"{}")  # fmt: skip
    report = _visit("PO-1", 15_000, None)
    entries = dict(processor.on_occupancies(slot, [report], {"PO-1": None}, NOW,
                                            dict).changed_entries)  # fmt: skip
    stored = slot.to_json()
    del stored["pg"]  # a value stored before the counts were kept
    old = UnitSlot.from_json(orjson.loads(orjson.dumps(stored)))
    assert old.progress is None
    other = _visit("PO-2", 15_500, None)
    (alert,) = processor.on_occupancies(
        old, [other], {"PO-2": None}, NOW, lambda: dict(entries)
    ).alerts
    assert alert["details"]["orders_in_progress"] == ["PO-1", "PO-2"]
    assert old.progress is not None
    assert old.progress["u-0"].count == 2
    # its whole list named every order then; one that leaves the downtime since is
    # not counted back from that list
    stored["ip"] = {"u-0": ["PO-1", "PO-GONE"]}  # PO-GONE: evicted, no entry
    older = UnitSlot.from_json(orjson.loads(orjson.dumps(stored)))
    moved = Occupancy("PO-1", UNIT, 2, [["dyeing", 1, to_ms(T0), to_ms(T0) + 1_000]])
    (alert,) = processor.on_occupancies(
        older, [moved], {"PO-1": entries["PO-1"]}, NOW, lambda: dict(entries)
    ).alerts
    assert alert["details"]["orders_in_progress"] == ["PO-GONE"]
    assert older.in_progress == {"u-0": ["PO-GONE"]}
