"""A unit status record reads only the occupancy entries that can matter
(streams.engine.occupancy_index), with the effects of reading them all.

It decoded every entry of the unit, a cost in the orders that visited the unit
within the retention. Two copies of the unit side (`UnitAgents` over in-memory
tables) take the same random inputs: visits, status records (late, full, known
ones too), forgets, crashes that keep one changelog's writes and lose the
other's (and at times the answers the step sent the orders), crashes that keep
the entries of two steps and lose the unit's value of both, the redeliveries
after them, and values stored by older versions (frozen entries before
tombstones, whole lists, no counts), in two mixes (`FOLDING`: folds meet
tombstones, frozen entries of several visits and entries told of nothing). One
reads every entry (as before), the other through the index: everything they
store and send must be the same, the index what a recovery builds from the
table, and every order with an entry must hold the downtimes its visits overlap.

Each walk costs ~2 s of CPU: the suite walks four seeds per mix, all sixteen with
CHAINWATCH_FUZZ=full (tests/fuzz_budget.py), as before a release.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fuzz_budget import FULL

from schemas.dead_letter import DeadLetter, DeadLetterSource
from streams.engine.limits import EngineLimits
from streams.engine.messages import DowntimeAnswer, Occupancy
from streams.engine.occupancy_index import (
    ANSWERED,
    FROZEN,
    PLAIN,
    RETRACTED,
    SPREAD,
    TOMBSTONE,
    UNREADABLE,
    OccupancyIndex,
    summary_of,
)
from streams.engine.order_slot import downtime_to_json
from streams.engine.unit_agents import UnitAgents
from streams.engine.unit_processor import OccupancyEntry, StoredEntries, UnitProcessor, UnitSlot
from streams.rules.downtimes import build_downtimes
from streams.rules.facts import from_ms, to_ms
from streams.rules.record_facts import unit_status_fact
from tests.engine.test_engine_unit_state import NOW, PLAN, T0, UNIT, _status


def _source(offset: int) -> DeadLetterSource:
    return DeadLetterSource(kind="kafka", topic="unit-status", partition=0, offset=offset)


STEP_S = 600
"""Every instant is a multiple of ten minutes: visits and records often share one."""
LIMITS = EngineLimits(max_unit_records=8, unit_lookback_ms=18 * STEP_S * 1000,
                      max_unit_left_orders=4)  # fmt: skip


class _Table(dict[str, bytes]):
    """A table that counts the values read."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


class _Runtime:
    """What `UnitAgents` uses of `EngineRuntime`: its two tables, and what it sends."""

    def __init__(self, limits: EngineLimits = LIMITS) -> None:
        self.plan = PLAN
        self.config = SimpleNamespace(limits=limits)
        self.clock = SimpleNamespace(
            observe=lambda partition, ms: to_ms(NOW), now=lambda partition: to_ms(NOW)
        )
        self.out = SimpleNamespace(order_inbox="order-inbox")
        self.unit_table: dict[str, bytes] = {}
        self.occupancy_table = _Table()
        self.sent: list[bytes] = []

    def get(self, table: dict[str, bytes], key: str) -> bytes | None:
        return table.get(key)

    def put(self, table: dict[str, bytes], key: str, value: bytes) -> None:
        table[key] = value

    def delete(self, table: dict[str, bytes], key: str) -> None:
        table.pop(key, None)

    def encoded(self, value: Any) -> bytes:
        return orjson.dumps(value)

    def join(self, _topic: str, answer: DowntimeAnswer) -> None:
        self.sent.append(answer.encode())

    def send_alerts(self, alerts: Iterable[dict[str, Any]], *, reannounce: bool = False) -> None:
        self.sent.extend(orjson.dumps(a) for a in alerts)

    def send_dead_letters(self, letters: Iterable[DeadLetter]) -> None:
        self.sent.extend(letter.encode() for letter in letters)

    def diverted(self, *_: Any) -> bool:
        return False

    @staticmethod
    def source(topic: str, message: Any) -> DeadLetterSource:
        return DeadLetterSource(kind="kafka", topic=topic, partition=0, offset=message.offset)

    @staticmethod
    @contextlib.contextmanager
    def acting_for(_event: Any) -> Iterator[None]:
        yield


class _EveryEntry(UnitAgents):
    """The unit side as it was: a status record reads every entry of the unit."""

    def stored(self, unit_id: str) -> StoredEntries:
        return StoredEntries(self.entries(unit_id))


def _event(offset: int, value: Any = None) -> Any:
    return SimpleNamespace(
        message=SimpleNamespace(partition=0, offset=offset, value=b"{}", key=None), value=value
    )


Step = tuple[str, int, Any]
"""("status", offset, UnitStatus) or ("reports", offset, [Occupancy])"""


@dataclass(frozen=True)
class _Profile:
    """How the random inputs are drawn."""

    orders: int = 16
    never_ended: float = 0.2
    """The share of visits that never ended (yet): each overlaps every later downtime,
    so while it stays the unit folds nothing after its start."""
    forgets: float = 0.2
    """The share of an order's later reports that are a forget (it left the state)."""
    visits: tuple[int, ...] = (0, 1, 1, 1, 2)
    """How many visits a report has (one drawn)."""
    statuses: float = 0.45
    """The share of steps that are a status record."""
    reach: int = 40
    """How far (in steps of STEP_S) before the clock a visit may start."""
    limits: EngineLimits = LIMITS


MIXED = _Profile()
FOLDING = _Profile(
    orders=24, never_ended=0.03, forgets=0.4, visits=(0, 1, 2, 2, 3), statuses=0.6, reach=10,
    limits=EngineLimits(max_unit_records=8, unit_lookback_ms=5 * STEP_S * 1000,
                        max_unit_left_orders=6),
)  # fmt: skip
"""Few visits that never end, many orders that leave and status records: downtimes fold
away often, beside tombstones, frozen entries of several visits and entries told that
no downtime overlaps them any more."""


class _Inputs:
    """Random inputs around a clock that moves forward, mostly."""

    def __init__(self, rng: random.Random, profile: _Profile = MIXED) -> None:
        self.rng = rng
        self.profile = profile
        self.orders = [f"PO-{k:02d}" for k in range(profile.orders)]
        self.clock = 40  # in steps of STEP_S after T0
        self.versions: dict[str, int] = {}
        self.statuses = 0
        self.offsets = {"status": 0, "reports": 0}
        self.past: list[Step] = []

    def _ms(self, step: int) -> int:
        return to_ms(T0 + timedelta(seconds=step * STEP_S))

    def _visit(self) -> list[Any]:
        rng = self.rng
        start: int | None = self.clock + rng.randint(-self.profile.reach, 6)
        end: int | None = (start or 0) + rng.randint(0, 10)
        shape = rng.random()
        if shape < self.profile.never_ended:
            end = None  # never ended (yet)
        elif shape < 0.35:
            start = None  # an unknown start counts as the end
        elif shape < 0.37:
            start = end = None  # not a visit
        return ["dyeing", rng.randint(1, 2), *(None if t is None else self._ms(t)
                                              for t in (start, end))]  # fmt: skip

    def _report(self) -> Occupancy:
        rng = self.rng
        order_id = rng.choice(self.orders)
        known = self.versions.get(order_id, 0)
        if known and rng.random() < self.profile.forgets:
            return Occupancy(order_id, UNIT, known, forget=True)
        version = max(1, known + rng.choice([-1, 0, 1, 1, 1]))
        self.versions[order_id] = max(known, version)
        visits = [self._visit() for _ in range(rng.choice(self.profile.visits))]
        return Occupancy(order_id, UNIT, version, visits)

    def next(self) -> Step:
        rng = self.rng
        if self.past and rng.random() < 0.08:  # sent again, at its position or a new one
            kind, offset, value = rng.choice(self.past)
            if rng.random() < 0.5:
                return kind, offset, value
            return self._new(kind, value)
        if rng.random() < self.profile.statuses:
            self.clock += rng.randint(0, 3)
            status = rng.choice(["down", "degraded", "up", "up"])
            at = self.clock + rng.choice([0, 0, 0, -1, -3, -10, -30, 2])
            self.statuses += 1
            return self._new("status", _status(self.statuses, at * STEP_S, status))
        return self._new("reports", [self._report() for _ in range(rng.randint(1, 4))])

    def _new(self, kind: str, value: Any) -> Step:
        offset = self.offsets[kind]
        self.offsets[kind] += 1
        step = (kind, offset, value)
        self.past.append(step)
        return step


class _Side:
    """One copy of the unit side, and its tables."""

    def __init__(self, every: bool, limits: EngineLimits = LIMITS) -> None:
        self.every = every
        self.rt = _Runtime(limits)
        self.agents = self._start()

    def _start(self) -> UnitAgents:
        kind = _EveryEntry if self.every else UnitAgents
        return kind(self.rt)  # type: ignore[arg-type]

    def restart(self) -> None:
        """A new worker: its index is built again from the table (a recovery)."""
        self.agents = self._start()

    async def take(self, step: Step) -> int:
        """The step's table reads."""
        kind, offset, value = step
        before = self.rt.occupancy_table.reads
        if kind == "status":
            await self.agents.on_status(_event(offset, value))
        else:
            await self.agents._reports([(_event(offset), occ) for occ in value])
        return self.rt.occupancy_table.reads - before

    def tables(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        return dict(self.rt.unit_table), dict(self.rt.occupancy_table)

    def restore(self, unit: dict[str, bytes] | None, entries: dict[str, bytes] | None) -> None:
        if unit is not None:
            self.rt.unit_table = dict(unit)
        if entries is not None:
            self.rt.occupancy_table.clear()
            self.rt.occupancy_table.update(entries)


def _as_stored_before(rng: random.Random, sides: list[_Side], orders: list[str]) -> str | None:
    """Make the state look as a version before tombstones or counts stored it; the
    order whose entry it froze, if any: that version froze the entry of an order it
    evicted, which is answered no more (a fold deletes the entry, and a report of the
    order that comes again after it is a new entry: the order must not be checked)."""
    unit, entries = sides[0].tables()
    choice = rng.random()
    frozen = None
    if choice < 0.4 and entries:
        key = rng.choice(sorted(entries))
        data = orjson.loads(entries[key])
        if len(data) > 5 and data[5] is not True:  # not a tombstone: frozen before them
            entries[key] = orjson.dumps([*data[:3], True])
            frozen = key.partition("|")[2]
    elif UNIT in unit:
        value = orjson.loads(unit[UNIT])
        if choice < 0.7:
            downtimes = [r[0] for r in value["r"] if r[3] != "up"]
            if downtimes:  # whole lists, an order evicted since among them
                names = [*rng.sample(orders, 3), "PO-EVICTED"]
                value["ip"] = {rng.choice(downtimes): sorted(names)}
        else:
            value["pg"] = None  # counts not kept yet
        unit[UNIT] = orjson.dumps(value)
    for side in sides:
        side.restore(unit, entries)
        side.restart()
    return frozen


class _Orders:
    """The order side of the join: each order keeps the newest answer it was sent
    (`OrderProcessor`: an older version changes nothing)."""

    def __init__(self) -> None:
        self.told: dict[str, tuple[list[int], list[Any]]] = {}
        self.left: set[str] = set()
        """Orders that left the state (a forget, or an entry frozen as a version before
        tombstones froze an evicted order's): they are answered no more."""

    def receive(self, sent: Iterable[bytes]) -> None:
        for raw in sent:
            if raw.startswith(b'{"k":"downtimes"'):
                answer = orjson.loads(raw)
                known = self.told.get(answer["o"])
                if known is None or answer["v"] >= known[0]:
                    self.told[answer["o"]] = (answer["v"], answer["d"])

    def check(self, side: _Side, where: str) -> None:
        """Every order with an entry holds the downtimes its visits overlap (RULES.md)."""
        raw = side.rt.unit_table.get(UNIT)
        records = [] if raw is None else UnitSlot.from_json(orjson.loads(raw)).records
        downtimes = build_downtimes(records)
        for key, value in side.rt.occupancy_table.items():
            order_id = key.partition("|")[2]
            entry = OccupancyEntry.from_json(orjson.loads(value))
            if entry.frozen or order_id in self.left:
                continue
            expected = [downtime_to_json(d) for d in downtimes if any(
                d.overlaps(*(None if t is None else from_ms(t) for t in visit[2:4]))
                for visit in entry.visits
            )]  # fmt: skip
            assert self.told.get(order_id, ([], []))[1] == expected, f"{where}: {order_id}"


def _version(side: _Side) -> int:
    raw = side.rt.unit_table.get(UNIT)
    return 0 if raw is None else UnitSlot.from_json(orjson.loads(raw)).version


async def _lose_two_steps(
    sides: list[_Side],
    previous: tuple[tuple[dict[str, bytes], dict[str, bytes]], Step, bool],
    last: tuple[Step, bool],
    where: str,
) -> None:
    """A crash kept the entries of the `last` step and the one before (`previous`: the
    tables before it, it, whether it took a record) and lost the unit's value of both:
    both come again, and a record a full unit took then is taken again."""
    for side in sides:
        side.restore(previous[0][0], None)
        side.restart()
    for again, taken_before in ((previous[1], previous[2]), last):
        for side in sides:
            start = len(side.rt.sent)
            await side.take(again)
            refused = [m for m in side.rt.sent[start:] if b"already holds" in m]
            assert not (taken_before and refused), f"{where}: {again}"


async def _walk(seed: int, steps: int, profile: _Profile = MIXED) -> tuple[int, int]:
    """(the table reads of the status records reading every entry, through the index)."""
    rng = random.Random(seed)
    inputs = _Inputs(rng, profile)
    every, indexed = sides = [_Side(True, profile.limits), _Side(False, profile.limits)]
    orders = _Orders()
    reads = [0, 0]
    crashes = random.Random(-seed - 1)  # its own draws: the walks above stay as they were
    previous: tuple[tuple[dict[str, bytes], dict[str, bytes]], Step, bool] | None = None
    for n in range(steps):
        step = inputs.next()
        if step[0] == "reports":
            orders.left.update(occ.order_id for occ in step[2] if occ.forget)
        if rng.random() < 0.03:
            evicted = _as_stored_before(rng, sides, inputs.orders)
            if evicted is not None:
                orders.left.add(evicted)
            previous = None
        kept = every.tables()
        version = _version(every)
        for k, side in enumerate(sides):
            taken = await side.take(step)
            if step[0] == "status":
                reads[k] += taken
        took = _version(every) > version
        lost_two = previous is not None and crashes.random() < 0.05
        if previous is not None and lost_two:
            await _lose_two_steps(sides, previous, (step, took), f"seed {seed}, step {n}")
        previous = (kept, step, took)
        crashed = rng.random() < 0.1  # a crash lost one changelog's writes of the step
        if crashed:
            lost_unit = rng.random() < 0.5
            lost_answers = rng.random() < 0.5  # and the bundles to the orders' inbox
        if crashed and not lost_two:
            unit, entries = kept
            for side in sides:
                if lost_answers:
                    side.rt.sent = [m for m in side.rt.sent if not m.startswith(b'{"k":"downt')]
                side.restore(unit if lost_unit else None, None if lost_unit else entries)
                side.restart()
                await side.take(step)  # the step redelivered
        where = f"seed {seed}, step {n}: {step[0]} at offset {step[1]}"
        assert indexed.rt.sent == every.rt.sent, where
        assert indexed.tables() == every.tables(), where
        rebuilt = OccupancyIndex.rebuild(indexed.rt.occupancy_table.items())
        assert indexed.agents.index().summaries() == rebuilt.summaries(), where
        orders.receive(every.rt.sent)
        orders.check(every, where)
        for side in sides:
            side.rt.sent.clear()
    return reads[0], reads[1]


@pytest.mark.parametrize("profile", [MIXED, FOLDING], ids=["mixed", "folding"])
@pytest.mark.parametrize("seed", range(16 if FULL else 4))
def test_a_status_record_through_the_index_has_the_effects_of_reading_every_entry(
    seed: int, profile: _Profile
) -> None:
    every, indexed = asyncio.run(_walk(seed, 600, profile))
    assert indexed < every  # and it reads fewer entries


def test_a_status_record_decodes_only_the_entries_that_can_matter() -> None:
    """1,000 orders visited the unit: 997 after its downtime ended, one inside it
    (answered), one since before it and one since after it, both still there. A new
    downtime reads the answered one and the two whose visits overlap it (they never
    ended), not the 997 others (it read all 1,000)."""
    side = _Side(every=False)

    def visit(start_h: int, end_h: int | None) -> list[list[Any]]:
        end = None if end_h is None else to_ms(T0 + timedelta(hours=end_h))
        return [["dyeing", 1, to_ms(T0 + timedelta(hours=start_h)), end]]

    async def main() -> int:
        await side.take(("status", 0, _status(0, 0, "down")))
        await side.take(("status", 1, _status(1, 2 * 3_600, "up")))
        batch = [Occupancy(f"PO-{k:04d}", UNIT, 1, visit(3, 4)) for k in range(997)]
        batch += [Occupancy("PO-INSIDE", UNIT, 1, visit(0, 1)),
                  Occupancy("PO-SINCE-0H", UNIT, 1, visit(0, None)),
                  Occupancy("PO-SINCE-5H", UNIT, 1, visit(5, None))]  # fmt: skip
        await side.take(("reports", 0, batch))
        side.restart()  # the index built from the table, as a recovery does
        side.rt.sent.clear()
        return await side.take(("status", 2, _status(2, 6 * 3_600, "down")))

    reads = asyncio.run(main())
    assert len(side.rt.occupancy_table) == 1_000
    assert reads == 3
    answers = [orjson.loads(m) for m in side.rt.sent if m.startswith(b'{"k":"downtimes"')]
    assert sorted(a["o"] for a in answers) == ["PO-SINCE-0H", "PO-SINCE-5H"]


def test_orders_told_once_and_orders_that_left_are_not_read_by_every_later_status_record() -> None:
    """The unit went down and its `up` came late: 300 orders were told of the open
    downtime; 200 (from 3 h to 4 h) were then told that it ended before they came, the
    100 inside it have left since (tombstones the unit's value counted). Ten later status
    records read none of them (they read all 300 each: whoever was answered, and every
    tombstone); one sent again reads the 200, and sends their answers again."""
    side = _Side(False, EngineLimits())  # a lookback of 30 days, 1,000 tombstones kept

    def visit(start_h: int, end_h: int) -> list[list[Any]]:
        return [["dyeing", 1, *(to_ms(T0 + timedelta(hours=h)) for h in (start_h, end_h))]]

    told = [f"PO-A{k:03d}" for k in range(200)]
    left = [f"PO-L{k:03d}" for k in range(100)]

    async def main() -> tuple[int, list[int], int]:
        await side.take(("status", 0, _status(0, 0, "down")))
        batch = [Occupancy(o, UNIT, 1, visit(3, 4)) for o in told]
        await side.take(("reports", 0, batch + [Occupancy(o, UNIT, 1, visit(0, 1)) for o in left]))
        await side.take(("reports", 1, [Occupancy(o, UNIT, 1, forget=True) for o in left]))
        late_up = await side.take(("status", 1, _status(1, 2 * 3_600, "up")))
        side.restart()  # the index built from the table, as a recovery does
        later = [_status(k, (4 + k) * 3_600, "down" if k % 2 else "up") for k in range(2, 12)]
        reads = [await side.take(("status", k, record)) for k, record in enumerate(later, 2)]
        side.rt.sent.clear()
        return late_up, reads, await side.take(("status", 2, later[0]))

    late_up, reads, again = asyncio.run(main())
    assert len(side.rt.occupancy_table) == 300
    assert late_up == 200  # told of the downtime: told now that it ended before they came
    assert reads == [0] * 10
    assert again == 200
    answers = [orjson.loads(m) for m in side.rt.sent if m.startswith(b'{"k":"downtimes"')]
    assert sorted(a["o"] for a in answers) == told
    assert {str(a["d"]) for a in answers} == {"[]"}


def test_an_order_told_of_no_downtime_is_told_again_when_a_crash_lost_the_unit_value() -> None:
    """PO-1 came while the unit was down (a visit that never ended): told of the
    downtime. A late `up` ends it before PO-1 came: PO-1 is told of none, an entry the
    index reads by its span or for a redelivery only. A crash keeps that entry and
    loses the unit's value and the answer; the `up` comes again, new to the unit's
    value: the entry, told at its version, is read and PO-1 told again."""
    side = _Side(every=False)
    came = to_ms(T0 + timedelta(hours=3))
    up = ("status", 1, _status(1, 2 * 3_600, "up"))

    async def main() -> list[Any]:
        await side.take(("status", 0, _status(0, 0, "down")))
        await side.take(("reports", 0, [Occupancy("PO-1", UNIT, 1, [["dyeing", 1, came, None]])]))
        unit, _ = side.tables()
        await side.take(up)
        entry = side.agents.entry(UNIT, "PO-1")
        assert entry is not None
        assert summary_of(entry)[2:] == (RETRACTED, 2)  # told at the unit's version 2
        side.restore(unit, None)  # the entry was kept, the unit's value and answer lost
        side.restart()
        side.rt.sent.clear()
        await side.take(up)
        return [orjson.loads(m) for m in side.rt.sent if m.startswith(b'{"k":"downtimes"')]

    (answer,) = asyncio.run(main())
    assert (answer["o"], answer["v"], answer["d"]) == ("PO-1", [2, 1], [])


def test_a_summary_spans_every_visit_an_unknown_start_counting_as_the_end() -> None:
    entry = OccupancyEntry(1, [["dyeing", 1, None, 50], ["dyeing", 2, 20, 30],
                               ["dyeing", 3, None, None]])  # fmt: skip
    assert summary_of(entry) == (20, 50, PLAIN, None)
    assert summary_of(OccupancyEntry(1, [["dyeing", 1, 20, None]])) == (20, None, PLAIN, None)
    assert summary_of(OccupancyEntry(1, [["dyeing", 1, None, None]])) == (None, None, PLAIN,
                                                                         None)  # fmt: skip


def test_a_summary_says_which_status_records_read_its_entry_whatever_its_visits() -> None:
    visit = [["dyeing", 1, 20, 30]]
    told = [["DYE-1", "dyeing", "down", "power_outage", 25, None, "s-1"]]
    assert summary_of(OccupancyEntry(1, visit, []))[2] == RETRACTED
    assert summary_of(OccupancyEntry(1, visit, told))[2] == ANSWERED
    assert summary_of(OccupancyEntry(1, visit, told, frozen=True))[2] == FROZEN
    two = [*visit, ["dyeing", 2, 40, 50]]
    assert summary_of(OccupancyEntry(1, two, told, frozen=True))[2] == FROZEN | SPREAD
    tombstone = OccupancyEntry(1, visit, told, True, gone=True, left_at=[3, 0])
    assert summary_of(tombstone)[2] == TOMBSTONE
    assert summary_of(OccupancyEntry(1, visit, [], told=7))[2:] == (RETRACTED, 7)


def test_a_value_that_does_not_decode_is_read_by_the_units_status_records_not_the_rebuild() -> None:
    """A corrupt stored entry does not stop the rebuild (faust's recovery callback: every
    unit of the worker was left without an index); it is summarised as read always, so
    its unit's status records decode it and fail there, as when every entry was read."""
    good = orjson.dumps(OccupancyEntry(1, [["dyeing", 1, 20, 30]]).to_json())
    index = OccupancyIndex.rebuild(
        [(f"{UNIT}|PO-GOOD", good), (f"{UNIT}|PO-BAD", b"{not json"), ("u-2|PO-X", b"[]")]
    )
    assert index.of(UNIT) == {"PO-GOOD": (20, 30, PLAIN, None), "PO-BAD": UNREADABLE}
    assert index.of("u-2") == {"PO-X": UNREADABLE}


def test_an_order_told_before_a_crash_takes_the_answers_after_it() -> None:
    """A crash lost the unit's value of two status records and kept the entries they
    wrote. Taken again, the first folds the downtime an order that left since held
    back (its entry is a tombstone now), so the second, late, is refused: the unit's
    version ends one lower than the version PO-B was told at. PO-B's next report is
    answered all the same, with the degraded spell its new visit overlaps: an order
    ignores an answer older than the one it holds."""
    limits = EngineLimits(max_unit_records=8, unit_lookback_ms=3_600_000)
    side = _Side(False, limits)
    orders = _Orders()

    def visit(start_s: int, end_s: int) -> list[list[Any]]:
        return [["dyeing", 1, *(to_ms(T0 + timedelta(seconds=s)) for s in (start_s, end_s))]]

    async def take(step: Step) -> list[bytes]:
        await side.take(step)
        sent, side.rt.sent = side.rt.sent, []
        orders.receive(sent)
        return sent

    async def main() -> None:
        await take(("status", 0, _status(0, 3_600, "down")))
        await take(("status", 1, _status(1, 7_200, "up")))
        await take(("reports", 0, [Occupancy("PO-A", UNIT, 1, visit(5_400, 5_700)),
                                   Occupancy("PO-B", UNIT, 1, visit(1_800, 3_200))]))  # fmt: skip
        unit, _ = side.tables()
        lost = [("status", 2, _status(2, 21_600, "degraded")),
                ("status", 3, _status(3, 1_800, "down")),  # late: 0.5 h to 1 h, PO-B told
                ("reports", 1, [Occupancy("PO-A", UNIT, 1, forget=True)])]  # fmt: skip
        for step in lost:
            await take(step)
        assert orders.told["PO-B"][0] == [4, 1]
        side.restore(unit, None)  # the entries were kept, the unit's value lost
        side.restart()
        again = [await take(step) for step in lost]  # the late record is refused now
        assert any(b"state_limit" in m for m in again[1])
        await take(("reports", 2, [Occupancy("PO-B", UNIT, 2, visit(23_400, 25_200))]))
        await take(("status", 4, _status(4, 21_000, "up")))  # before the degraded spell

    asyncio.run(main())
    raw = side.rt.unit_table[UNIT]
    downtimes = build_downtimes(UnitSlot.from_json(orjson.loads(raw)).records)
    expected = [downtime_to_json(d) for d in downtimes if d.event_id == "u-2"]
    assert orders.told["PO-B"][1] == expected


def test_a_report_keeps_when_its_order_was_told_for_a_status_record_that_comes_again() -> None:
    """A `down` told PO-B of the downtime; a report of PO-B with the same visit then
    rewrote its entry (the same answer: none sent, the unit's value not stored). A crash
    lost the unit's value and the answer, and kept the entries and the report's commit:
    the `down` comes again, new to the unit's value, and PO-B is told, since its entry
    still says it was told at the version the `down` takes the unit to."""
    side = _Side(every=False)
    orders = _Orders()
    visit = [["dyeing", 1, *(to_ms(T0 + timedelta(hours=h)) for h in (2, 3))]]
    down = ("status", 0, _status(0, 3_600, "down"))

    async def main() -> None:
        await side.take(("reports", 0, [Occupancy("PO-B", UNIT, 1, visit)]))
        unit, _ = side.tables()
        await side.take(down)
        side.rt.sent.clear()  # the answer was lost
        stored = side.tables()[0]
        await side.take(("reports", 1, [Occupancy("PO-B", UNIT, 2, visit)]))
        assert side.tables()[0] == stored
        assert not side.rt.sent
        side.restore(unit, None)  # the entries were kept, the unit's value lost
        side.restart()
        await side.take(down)
        orders.receive(side.rt.sent)

    asyncio.run(main())
    assert [d[6] for d in orders.told["PO-B"][1]] == ["u-0"]


class _FullUnit:
    """A unit side at its limit (4 records), driven step by step, with what it sends
    kept: the alerts by id (latest body), the offsets of its `state_limit` dead letters,
    and what its orders were told (`_Orders`)."""

    def __init__(self) -> None:
        self.side = _Side(False, EngineLimits(max_unit_records=4, unit_lookback_ms=3_600_000))
        self.orders = _Orders()
        self.alerts: dict[str, dict[str, Any]] = {}
        self.letters: list[int] = []

    @staticmethod
    def visit(start_s: int, end_s: int | None) -> list[list[Any]]:
        end = None if end_s is None else to_ms(T0 + timedelta(seconds=end_s))
        return [["dyeing", 1, to_ms(T0 + timedelta(seconds=start_s)), end]]

    async def take(self, step: Step) -> None:
        await self.side.take(step)
        sent, self.side.rt.sent = self.side.rt.sent, []
        self.orders.receive(sent)
        self.letters.extend(
            orjson.loads(m)["source"]["offset"] for m in sent if b"state_limit" in m
        )
        for body in (orjson.loads(m) for m in sent if m.startswith(b'{"alert_id"')):
            self.alerts[body["alert_id"]] = body

    def records(self) -> list[str]:
        return [r.event_id for r in self.side.agents.load(UNIT).records]

    def alert_of(self, event_id: str) -> dict[str, Any]:
        (alert,) = [a for a in self.alerts.values() if a["details"].get("event_id") == event_id]
        return alert


def test_a_record_a_full_unit_took_before_a_crash_is_taken_again_after_it() -> None:
    """A unit at its limit (4 records) takes `u-4` after folding the downtime `u-0`:
    PO-H, whose visit held it back, left. A late report of PO-X, whose visit overlaps
    `u-0`, follows. A crash keeps the entries and loses the unit's value of both steps:
    `u-4` comes again to a full unit whose fold PO-X now holds back. It was taken (its
    alert published, PO-A told of it), so it is taken again, over the limit: refused,
    the unit forgot the downtime and its `up`, its alert stayed open for ever and PO-A
    kept it. The unit ends as without the crash, but for `u-0`, which PO-X holds."""
    unit_side = _FullUnit()
    side, take, visit = unit_side.side, unit_side.take, unit_side.visit

    async def main() -> None:
        await take(("status", 0, _status(0, 0, "down")))
        await take(("reports", 0, [Occupancy("PO-H", UNIT, 1, visit(100, 200))]))
        await take(("status", 1, _status(1, 600, "up")))
        await take(("status", 2, _status(2, 1_200, "down")))
        await take(("status", 3, _status(3, 4_500, "up")))  # u-0 held back by PO-H
        await take(("reports", 1, [Occupancy("PO-H", UNIT, 1, forget=True),
                                   Occupancy("PO-A", UNIT, 1, visit(4_800, None))]))  # fmt: skip
        unit, _ = side.tables()
        await take(("status", 4, _status(4, 5_000, "down")))  # full: u-0 folded, room
        assert unit_side.records() == ["u-2", "u-3", "u-4"]
        await take(("reports", 2, [Occupancy("PO-X", UNIT, 1, visit(300, 500))]))
        side.restore(unit, None)  # the entries were kept, the unit's value lost
        side.restart()
        await take(("status", 4, _status(4, 5_000, "down")))
        await take(("status", 5, _status(5, 5_600, "up")))

    asyncio.run(main())
    assert unit_side.letters == []
    records = unit_side.records()
    assert records == ["u-0", "u-1", "u-2", "u-3", "u-4", "u-5"]  # limit + 1 + 1 lost
    assert unit_side.alert_of("u-4")["status"] == "resolved"
    assert [d[6] for d in unit_side.orders.told["PO-A"][1]] == ["u-4"]
    assert unit_side.orders.told["PO-A"][1][0][5] is not None  # ended by u-5


def test_the_records_the_steps_a_crash_lost_read_are_taken_over_the_limit() -> None:
    """An entry told at version 5 by offset 9, above the unit's 4: a crash lost the value
    of steps that read up to offset 9. `u-8` (offset 8) may have been refused then and
    `u-9` taken, or the other way round if a record before them was taken differently:
    both are taken, over the limit (a refused one keeps its dead letter), and `u-10`,
    past what the lost steps read, is refused. The mark is in the value until then."""
    limits = EngineLimits(max_unit_records=4, unit_lookback_ms=3_600_000)
    processor = UnitProcessor(PLAN, limits)
    slot = UnitSlot(UNIT)
    for k in range(4):
        record = unit_status_fact(_status(k, 600 * k, "down" if k % 2 == 0 else "up"))
        processor.on_status(slot, record, {}, NOW, _source(k), b"{}")
    assert slot.version == 4
    told = {"PO-A": OccupancyEntry(1, [["dyeing", 1, to_ms(T0), None]], [], told=5, told_by=9)}
    taken = processor.on_status(slot, unit_status_fact(_status(8, 3_000, "degraded")),
                                told, NOW, _source(8), b"{}")  # fmt: skip
    assert taken.dead_letters == []
    assert UnitSlot.from_json(orjson.loads(orjson.dumps(slot.to_json()))).lost_offset == 9
    taken = processor.on_status(slot, unit_status_fact(_status(9, 3_100, "degraded")),
                                told, NOW, _source(9), b"{}")  # fmt: skip
    assert taken.dead_letters == []
    assert (slot.version, slot.lost_offset, len(slot.records)) == (6, None, 6)
    assert "lo" not in slot.to_json()
    refused = processor.on_status(slot, unit_status_fact(_status(10, 3_200, "degraded")),
                                  told, NOW, _source(10), b"{}")  # fmt: skip
    assert [d.reason_code.value for d in refused.dead_letters] == ["state_limit"]


def test_the_entries_told_by_a_record_taken_before_a_crash_take_it_again() -> None:
    """`u-4` is refused (PO-H holds `u-0` back), PO-H leaves, `u-5` is taken (`u-0`
    folded) and PO-X told of it: its entry says `u-5` (offset 5) took the unit to 5. A
    crash keeps the entries and loses the unit's value (at 4); PO-Y's visit now holds
    `u-0` back. What `_answer` recorded says the lost steps read up to offset 5: `u-4`
    and `u-5` are both taken, over the limit (`u-4` keeps its dead letter from before;
    refused, `u-5` would be forgotten, its alert out). Without `told_by` both are
    refused."""
    unit_side = _FullUnit()
    side, take, visit = unit_side.side, unit_side.take, unit_side.visit

    async def main() -> None:
        await take(("status", 0, _status(0, 0, "down")))
        await take(("reports", 0, [Occupancy("PO-H", UNIT, 1, visit(100, 200))]))
        await take(("status", 1, _status(1, 600, "up")))
        await take(("status", 2, _status(2, 1_200, "down")))
        await take(("status", 3, _status(3, 4_500, "up")))  # u-0 held back by PO-H
        await take(("status", 4, _status(4, 5_000, "down")))  # full: refused
        await take(("reports", 1, [Occupancy("PO-H", UNIT, 1, forget=True),
                                   Occupancy("PO-X", UNIT, 1, visit(5_300, 5_500))]))  # fmt: skip
        unit, _ = side.tables()
        await take(("status", 5, _status(5, 5_200, "down")))  # u-0 folded: taken
        await take(("reports", 2, [Occupancy("PO-Y", UNIT, 1, visit(300, 500))]))
        assert unit_side.letters == [4]
        side.restore(unit, None)  # the entries were kept, the unit's value lost
        side.restart()
        await take(("status", 4, _status(4, 5_000, "down")))
        await take(("status", 5, _status(5, 5_200, "down")))

    asyncio.run(main())
    assert unit_side.letters == [4]
    assert unit_side.records()[-2:] == ["u-4", "u-5"]
    assert unit_side.alert_of("u-5")["status"] == "open"


def test_a_record_taken_after_one_taken_again_that_was_refused_is_taken_again_too() -> None:
    """`u-4` refused (`u-0` held by PO-H), PO-H leaves, `u-5` taken (`u-0` folded), PO-X
    told of `u-5`, `u-6` (its up) taken: PO-X told at 6 by offset 6. A crash loses the
    unit's value (kept at 4): `u-4` comes again and is taken (nothing tells it was
    refused: the lost steps read up to offset 6), then `u-5` must be taken too (it was,
    its alert is out). Deciding by which record took the unit to its next version, the
    versions were one ahead after `u-4`: `u-5` was refused and its alert stayed open."""
    unit_side = _FullUnit()
    side, take, visit = unit_side.side, unit_side.take, unit_side.visit

    async def main() -> None:
        await take(("status", 0, _status(0, 0, "down")))
        await take(("reports", 0, [Occupancy("PO-H", UNIT, 1, visit(100, 200))]))
        await take(("status", 1, _status(1, 600, "up")))
        await take(("status", 2, _status(2, 1_200, "down")))
        await take(("status", 3, _status(3, 4_500, "up")))  # u-0 held back by PO-H
        await take(("status", 4, _status(4, 5_000, "down")))  # full: refused
        await take(("reports", 1, [Occupancy("PO-H", UNIT, 1, forget=True)]))
        unit, _ = side.tables()
        await take(("status", 5, _status(5, 5_200, "down")))  # u-0 folded: taken
        await take(("reports", 2, [Occupancy("PO-X", UNIT, 1, visit(5_300, 5_500))]))
        await take(("status", 6, _status(6, 5_600, "up")))
        await take(("reports", 3, [Occupancy("PO-Y", UNIT, 1, visit(300, 500))]))
        assert unit_side.records() == ["u-2", "u-3", "u-5", "u-6"]
        assert unit_side.letters == [4]
        side.restore(unit, None)  # the entries were kept, the unit's value lost
        side.restart()
        for k, at, status in ((4, 5_000, "down"), (5, 5_200, "down"), (6, 5_600, "up")):
            await take(("status", k, _status(k, at, status)))

    asyncio.run(main())
    assert "u-5" in unit_side.records(), (unit_side.records(), unit_side.letters)
    assert unit_side.alert_of("u-5")["status"] == "resolved"


def test_a_unit_value_without_the_crash_mark_is_stored_as_before() -> None:
    """`lost_offset` is written only while set: a value of a run without a crash keeps
    the keys (and bytes) it had before the mark existed, and such a value loads
    unmarked and is written back byte for byte."""
    processor = UnitProcessor(PLAN, EngineLimits(max_unit_records=4))
    slot = UnitSlot(UNIT)
    for k in range(6):  # full from the fifth: refused, nothing told above its version
        record = unit_status_fact(_status(k, 600 * k, "down" if k % 2 == 0 else "up"))
        processor.on_status(slot, record, {}, NOW, _source(k), b"{}")
    raw = orjson.dumps(slot.to_json())
    assert list(orjson.loads(raw)) == ["u", "r", "a", "ip", "pg", "n", "fl", "t", "o", "ib",
                                       "lf", "gn", "ol"]  # fmt: skip
    loaded = UnitSlot.from_json(orjson.loads(raw))
    assert loaded.lost_offset is None
    assert orjson.dumps(loaded.to_json()) == raw
    loaded.lost_offset = 7
    assert UnitSlot.from_json(orjson.loads(orjson.dumps(loaded.to_json()))) == loaded


def test_the_crash_mark_goes_at_a_record_at_it_that_is_known_or_late() -> None:
    """The lost steps read up to offset 9 (PO-A told at 7 by it): `u-7` and `u-8` are
    taken over the limit (`u-0` folded, the unit full), then the record at the mark is
    not taken: a copy of `u-8` (known) or one older than the fold horizon (late). No
    later record was read by the lost steps: the mark goes, and is stored gone. Kept,
    it stayed in the value until a record was taken, and a second crash's mark was not
    set: `u-10`, which that crash's lost steps took (PO-B told at 7 by offset 10), was
    refused, its alert out."""
    limits = EngineLimits(max_unit_records=4, unit_lookback_ms=3_600_000)
    after = [["dyeing", 1, to_ms(T0 + timedelta(seconds=4_000)),
              to_ms(T0 + timedelta(seconds=4_100))]]  # fmt: skip
    for at_mark in (_status(8, 5_000, "degraded"), _status(9, 100, "down")):
        processor = UnitProcessor(PLAN, limits)
        slot = UnitSlot(UNIT)
        for k in range(4):
            record = unit_status_fact(_status(k, 600 * k, "down" if k % 2 == 0 else "up"))
            processor.on_status(slot, record, {}, NOW, _source(k), b"{}")
        told = {"PO-A": OccupancyEntry(1, after, [], told=7, told_by=9)}
        for k in (7, 8):
            taken = processor.on_status(slot, unit_status_fact(_status(k, 4_900 + k, "degraded")),
                                        told, NOW, _source(k), b"{}")  # fmt: skip
            assert taken.dead_letters == []
        assert ([r.event_id for r in slot.records], slot.lost_offset) == (
            ["u-2", "u-3", "u-7", "u-8"], 9)  # fmt: skip
        if at_mark.event_id == "u-8":
            at_mark = _status(8, 4_908, "degraded")
        decided = processor.on_status(slot, unit_status_fact(at_mark), told, NOW, _source(9),
                                      b"{}")  # fmt: skip
        assert decided.changed, at_mark.event_id  # the value is stored without the mark
        assert "lo" not in slot.to_json(), at_mark.event_id
        told["PO-B"] = OccupancyEntry(1, after, [], told=7, told_by=10)
        taken = processor.on_status(slot, unit_status_fact(_status(10, 5_100, "degraded")),
                                    told, NOW, _source(10), b"{}")  # fmt: skip
        assert taken.dead_letters == [], at_mark.event_id
