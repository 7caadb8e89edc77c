"""The orders that left the state stay counted in a unit's alerts, in bounded state
(CONTRACT v1.2 "Bounded state", issue 9 item 3), without a broker.

An evicted order used to keep its occupancy entry, frozen, until every downtime it
overlapped was folded away: a downtime that never ends (an `up` never sent) is never
folded, so a unit kept an entry per order that ever visited it. Now the order moves
into the unit's count of the orders that left, and its entry becomes a tombstone;
the unit keeps the last `max_unit_left_orders` tombstones. The unit inbox is
at-least-once: every forget may come twice (redelivered at its position, or sent
again by the order side at a new one), and a crash may keep only the entries or only
the unit's value; each order is counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import orjson

from streams.engine.limits import EngineLimits
from streams.engine.messages import Occupancy
from streams.engine.unit_processor import OccupancyEntry, UnitEffects, UnitProcessor, UnitSlot
from streams.rules.alert_json import alert_json
from streams.rules.downtimes import build_downtimes
from streams.rules.evaluate import ORDERS_LISTED, UnitOccupancy, evaluate_unit
from streams.rules.facts import to_ms
from streams.rules.record_facts import unit_status_fact
from tests.engine.test_engine_unit_state import NOW, PLAN, T0, UNIT, _status, _unit_src


def _visit(order_id: str) -> Occupancy:
    """A closed visit inside the downtime that starts at 14,400 s."""
    start, end = (to_ms(T0 + timedelta(seconds=s)) for s in (15_000, 16_000))
    return Occupancy(order_id, UNIT, 1, [["dyeing", 1, start, end]])


def _forget(order_id: str) -> Occupancy:
    return Occupancy(order_id, UNIT, 1, forget=True)


@dataclass
class Unit:
    """One unit's two changelogs as `UnitAgents.apply` writes them: its value and its
    occupancy entries. A crash may keep either write of a batch and lose the other."""

    processor: UnitProcessor
    value: bytes = field(default_factory=lambda: orjson.dumps(UnitSlot(UNIT).to_json()))
    entries: dict[str, OccupancyEntry] = field(default_factory=dict)
    offset: int = 0
    """The unit inbox's next offset (each batch is one bundle)."""

    @property
    def slot(self) -> UnitSlot:
        return UnitSlot.from_json(orjson.loads(self.value))

    def reports(
        self,
        messages: Sequence[Occupancy],
        offset: int | None = None,
        *,
        keep_value: bool = True,
        keep_entries: bool = True,
    ) -> UnitEffects:
        """A bundle at a new offset, or again at `offset` (a redelivery)."""
        if offset is None:
            offset, self.offset = self.offset, self.offset + 1
        slot = self.slot
        effects = self.processor.on_occupancies(
            slot, messages, {m.order_id: self.entries.get(m.order_id) for m in messages}, NOW,
            lambda: dict(self.entries), [(offset, n) for n in range(len(messages))],
        )  # fmt: skip
        self._store(slot, effects, keep_value, keep_entries)
        return effects

    def status(self, k: int, at: float, status: str) -> UnitEffects:
        slot = self.slot
        effects = self.processor.on_status(
            slot, unit_status_fact(_status(k, at, status)), dict(self.entries), NOW,
            _unit_src(k), b"{}",
        )  # fmt: skip
        self._store(slot, effects, True, True)
        return effects

    def _store(self, slot: UnitSlot, effects: UnitEffects, value: bool, entries: bool) -> None:
        if value:
            self.value = orjson.dumps(slot.to_json())
        if entries:
            self.entries.update(effects.changed_entries)
            for order_id in effects.forgotten:
                self.entries.pop(order_id, None)

    def listing(self) -> tuple[list[str], int]:
        return self.slot.listing("u-0")


def _down_unit(orders: Sequence[str], kept: int = 1_000) -> Unit:
    unit = Unit(UnitProcessor(PLAN, EngineLimits(max_unit_left_orders=kept)))
    unit.status(0, 14_400, "down")  # never ends
    unit.reports([_visit(o) for o in orders])
    return unit


def test_orders_that_leave_under_a_downtime_that_never_ends_keep_the_unit_bounded() -> None:
    """Every order that visited the down unit stays counted after it left the state,
    and the unit keeps `max_unit_left_orders` tombstones, not an entry per order (it
    kept 200 frozen entries here, and every status record read them all)."""
    ids = [f"PO-{k:04d}" for k in range(200)]
    unit = _down_unit(ids, kept=10)
    for start in range(0, len(ids), 7):  # batches of forgets, as evictions come
        unit.reports([_forget(o) for o in ids[start : start + 7]])
        assert len(unit.entries) <= len(ids) - min(start + 7, len(ids)) + 10
    assert len(unit.entries) == 10
    assert all(e.gone for e in unit.entries.values())
    assert unit.listing() == (ids[:ORDERS_LISTED], 200)
    assert len(unit.value) < 5_000

    (down,) = unit.status(1, 20_000, "up").alerts
    assert (down["type"], down["status"]) == ("unit_down", "resolved")
    # the reference engine's alert counts and lists the same orders (it never evicts)
    occupancy = [UnitOccupancy(UNIT, o, "dyeing", 1, T0 + timedelta(seconds=15_000),
                               T0 + timedelta(seconds=16_000)) for o in ids]  # fmt: skip
    downtimes = build_downtimes(unit.slot.records)
    reference = evaluate_unit(UNIT, downtimes, PLAN, NOW, occupancy)
    assert alert_json(reference[down["alert_id"]])["details"] == down["details"]


def test_a_forget_that_comes_again_counts_the_order_once() -> None:
    """At-least-once: the same forget redelivered at its position, sent again at a new
    one (the order side evicted it again after a crash), and after its report came
    again, even once later orders left (while its tombstone is among the kept)."""
    unit = _down_unit(["PO-0", "PO-1", "PO-2", "PO-3"], kept=2)
    first = unit.offset
    unit.reports([_forget("PO-0")])
    assert unit.listing() == (["PO-0", "PO-1", "PO-2", "PO-3"], 4)
    assert unit.entries["PO-0"].gone

    again = unit.reports([_forget("PO-0")], offset=first)  # redelivered, both kept
    assert (again.changed, again.changed_entries, again.forgotten) == (False, {}, set())
    unit.reports([_forget("PO-0")])  # sent again, at a new position
    unit.reports([_visit("PO-0"), _forget("PO-0")])  # its report and forget sent again
    unit.reports([_forget("PO-1")])  # a later order left (PO-0's tombstone is kept)
    unit.reports([_visit("PO-0")])
    unit.reports([_forget("PO-0")])
    assert unit.listing() == (["PO-0", "PO-1", "PO-2", "PO-3"], 4)

    unit.reports([_forget("PO-2")])  # one more: PO-0's tombstone is deleted
    assert sorted(unit.entries) == ["PO-1", "PO-2", "PO-3"]
    unit.reports([_forget("PO-0")], offset=first)  # no entry: changes nothing
    (resolved,) = unit.status(1, 20_000, "up").alerts
    assert resolved["details"]["orders_in_progress"] == ["PO-0", "PO-1", "PO-2", "PO-3"]
    assert resolved["details"]["orders_in_progress_count"] == 4


def test_a_forget_is_counted_once_across_a_crash_that_kept_only_the_tombstone() -> None:
    """The tombstone was stored, the unit's value was lost: a status record before the
    forget comes again still counts the order (by its tombstone), and the forget that
    comes again moves it into the orders that left, once."""
    unit = _down_unit(["PO-0", "PO-1", "PO-2"])
    at = unit.offset
    unit.reports([_forget("PO-0")], keep_value=False)
    assert unit.entries["PO-0"].gone
    assert unit.slot.left == {}

    unit.status(1, 14_500, "degraded")  # before the redelivery
    assert unit.listing() == (["PO-0", "PO-1", "PO-2"], 3)
    unit.reports([_forget("PO-0")], offset=at)
    assert unit.slot.left["u-0"].count == 1
    assert unit.listing() == (["PO-0", "PO-1", "PO-2"], 3)
    unit.reports([_forget("PO-0")], offset=at)
    assert unit.slot.left["u-0"].count == 1
    (resolved,) = [a for a in unit.status(2, 20_000, "up").alerts if a["type"] == "unit_down"]
    assert resolved["details"]["orders_in_progress_count"] == 3


def test_a_forget_is_counted_once_across_a_crash_that_kept_only_the_unit_value() -> None:
    """The unit's value counted the forget, the tombstone was lost (the entry is still
    the order's report): it does not count its order again, at a status record nor
    when the forget comes again (redelivered, or sent again at a new position), which
    makes the tombstone. The order is not among the ids of the orders that left
    listed, so only the count tells."""
    ids = [f"PO-{k:02d}" for k in range(ORDERS_LISTED + 5)]
    unit = _down_unit(ids)
    unit.reports([_forget(o) for o in ids[:-1]])
    at = unit.offset
    unit.reports([_forget(ids[-1])], keep_entries=False)
    assert not unit.entries[ids[-1]].frozen
    assert unit.slot.left["u-0"].count == len(ids)

    unit.status(1, 14_500, "degraded")  # before the redelivery
    assert unit.listing() == (ids[:ORDERS_LISTED], len(ids))
    unit.reports([_forget(ids[-1])])  # sent again, at a new position
    unit.reports([_forget(ids[-1])], offset=at)
    assert unit.entries[ids[-1]].gone
    assert unit.slot.left["u-0"].count == len(ids)
    (resolved,) = [a for a in unit.status(2, 20_000, "up").alerts if a["type"] == "unit_down"]
    assert resolved["details"]["orders_in_progress_count"] == len(ids)


def test_a_kept_value_whose_tombstone_was_deleted_since_deletes_the_entry() -> None:
    """The value counted the forget and deleted the tombstone later (more orders left);
    the entry writes of both were lost: the forget that comes again deletes the entry."""
    unit = _down_unit(["PO-0", "PO-1", "PO-2"], kept=1)
    at = unit.offset
    unit.reports([_forget("PO-0")], keep_entries=False)
    unit.reports([_forget("PO-1")], keep_entries=False)
    assert list(unit.slot.gone) == ["PO-1"]
    effects = unit.reports([_forget("PO-0")], offset=at)
    assert effects.forgotten == {"PO-0"}
    assert "PO-0" not in unit.entries
    assert unit.listing() == (["PO-0", "PO-1", "PO-2"], 3)


def test_a_tombstone_whose_deletion_a_crash_lost_goes_at_the_next_status_record() -> None:
    unit = _down_unit(["PO-0", "PO-1", "PO-2"], kept=1)
    unit.reports([_forget("PO-0")])
    unit.reports([_forget("PO-1")], keep_entries=False)  # PO-0's deletion lost
    assert unit.entries["PO-0"].gone
    assert list(unit.slot.gone) == ["PO-1"]
    assert unit.status(1, 14_500, "degraded").forgotten == {"PO-0"}
    assert unit.listing() == (["PO-0", "PO-1", "PO-2"], 3)


def test_a_frozen_entry_stored_before_tombstones_still_counts_its_order() -> None:
    unit = _down_unit(["PO-1"])
    visits = _visit("PO-OLD").visits
    unit.entries["PO-OLD"] = OccupancyEntry.from_json([1, visits, None, True, None])
    unit.reports([_forget("PO-OLD")])  # it left before: changes nothing
    (alert,) = unit.status(1, 20_000, "up").alerts
    assert alert["details"]["orders_in_progress"] == ["PO-1", "PO-OLD"]


def test_an_order_that_left_with_a_visit_that_never_ended_counts_in_later_downtimes() -> None:
    """A visit that never ended (RULES.md: a stage skipped while it was open) overlaps
    every later downtime, also after its order left the state, as in the reference
    engine, which lets no order go (here the unit was up when the orders left)."""
    unit = Unit(UnitProcessor(PLAN, EngineLimits(max_unit_left_orders=1)))
    starts = {"PO-OPEN": 15_000, "PO-OTHER": 15_500}
    for order_id, start in starts.items():
        visit = ["dyeing", 1, to_ms(T0 + timedelta(seconds=start)), None]
        unit.reports([Occupancy(order_id, UNIT, 1, [visit])])
        unit.reports([_forget(order_id)])
        unit.reports([_forget(order_id)])  # sent again
    assert list(unit.entries) == ["PO-OTHER"]  # PO-OPEN's tombstone was deleted

    (down,) = unit.status(0, 30_000, "down").alerts
    assert down["details"]["orders_in_progress"] == ["PO-OPEN", "PO-OTHER"]
    unit.status(0, 30_000, "down")  # the same record again
    (resolved,) = unit.status(1, 31_000, "up").alerts
    occupancy = [UnitOccupancy(UNIT, o, "dyeing", 1, T0 + timedelta(seconds=s), None)
                 for o, s in starts.items()]  # fmt: skip
    reference = evaluate_unit(UNIT, build_downtimes(unit.slot.records), PLAN, NOW, occupancy)
    assert alert_json(reference[resolved["alert_id"]])["details"] == resolved["details"]
    assert resolved["details"]["orders_in_progress_count"] == 2


def test_a_report_that_comes_again_after_a_fold_deleted_the_tombstone_counts_no_order_twice() -> (
    None
):
    """A fold deletes the tombstones that overlap no kept downtime, but their orders
    stay counted in `UnitSlot.open_left` (their visit never ended): the report and the
    forget of one that come again (at-least-once, after a status record) must not
    count it a second time. The order is not among the first ids listed there, so
    only the count tells."""
    unit = Unit(UnitProcessor(PLAN, EngineLimits()))
    day = 86_400
    unit.status(0, 100, "down")
    unit.status(1, 200, "up")
    visit = ["dyeing", 1, to_ms(T0 + timedelta(seconds=1_000)), None]
    ids = [f"PO-{k:02d}" for k in range(ORDERS_LISTED)] + ["PO-OPEN"]
    unit.reports([Occupancy(o, UNIT, 1, [visit]) for o in ids])
    unit.reports([_forget(o) for o in ids])
    unit.status(2, 31 * day, "up")  # past the lookback: the downtime folds, the tombstones too
    assert unit.entries == {}

    unit.reports([Occupancy("PO-OPEN", UNIT, 1, [visit])])  # its report comes again
    (down,) = unit.status(3, 32 * day, "down").alerts
    assert down["details"]["orders_in_progress_count"] == len(ids)
    unit.reports([_forget("PO-OPEN")])  # and its forget
    (later,) = [
        a for a in unit.status(4, 33 * day, "degraded").alerts if a["type"] == "unit_degraded"
    ]
    assert later["details"]["orders_in_progress_count"] == len(ids)
    assert unit.entries == {}


def test_an_earlier_report_that_comes_again_after_its_order_left_untombstoned_is_skipped() -> None:
    """An order that leaves overlapping no kept downtime keeps no tombstone: its entry
    is deleted. Its earlier report (a visit still open) that comes again must not
    bring the entry back: it would count an order whose visit ended in every later
    downtime, and stay for ever (only a forget deletes an entry)."""
    unit = Unit(UnitProcessor(PLAN, EngineLimits()))
    start, end = (to_ms(T0 + timedelta(seconds=s)) for s in (1_000, 2_000))
    opened = Occupancy("PO-1", UNIT, 1, [["dyeing", 1, start, None]])
    unit.reports([opened])
    unit.reports([Occupancy("PO-1", UNIT, 2, [["dyeing", 1, start, end]])])
    unit.reports([_forget("PO-1")])
    assert unit.entries == {}

    unit.reports([opened])  # comes again (at-least-once)
    (down,) = unit.status(0, 3_000, "down").alerts
    assert down["details"]["orders_in_progress_count"] == 0
    assert unit.entries == {}


def test_a_tombstone_a_crash_kept_without_the_unit_value_outlives_a_fold() -> None:
    """The tombstone was stored, the unit's value (which counts the order) was lost, and
    a status record folds away every downtime before the forget comes again: the
    tombstone is what the forget counts the order from, so the fold keeps it (the
    order's visit never ended: it counts in every later downtime)."""
    unit = Unit(UnitProcessor(PLAN, EngineLimits()))
    unit.status(0, 100, "down")
    unit.status(1, 200, "up")
    visit = ["dyeing", 1, to_ms(T0 + timedelta(seconds=1_000)), None]
    unit.reports([Occupancy("PO-OPEN", UNIT, 1, [visit])])
    at = unit.offset
    unit.reports([_forget("PO-OPEN")], keep_value=False)
    unit.status(2, 31 * 86_400, "up")  # past the lookback: the downtime folds
    unit.reports([_forget("PO-OPEN")], offset=at)  # redelivered
    (down,) = unit.status(3, 32 * 86_400, "down").alerts
    assert (down["details"]["orders_in_progress"], down["details"]["orders_in_progress_count"]) == (
        ["PO-OPEN"], 1)  # fmt: skip
    assert unit.entries["PO-OPEN"].gone
