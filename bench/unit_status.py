"""Benchmark: one unit status record at a unit with N occupancy entries, pure path, no Kafka.

    .venv/bin/python bench/unit_status.py [--shape spread retracted tombstones]
        [--orders 1000 10000 50000] [--overlap 0 1] [--repeat 5] [--every]

The unit was down for two hours on day 1. Its N orders (`--shape`):

- `spread`: each reports one closed four-hour visit, spread over days 2-29
  (`--overlap P`: P % of them inside the downtime instead, answered with it);
- `retracted`: as `spread`, but the unit's `up` came only on day 29 (backdated to
  day 1, two hours after its `down`): every order was answered with the open
  downtime, then told it no longer overlaps (answered once, with nothing now);
- `tombstones`: as `spread`, and 1,000 more orders were inside the downtime,
  answered, and left the state since (evicted): 1,000 tombstones, the most a unit
  keeps (`max_unit_left_orders`), all overlapping the kept downtime.

Timed (CPU, best of `--repeat`): a `down` on day 30 taken as `UnitAgents.on_status`
takes it: the unit's value loaded, its entries read from the table (`--every`: every
entry decoded, as before the occupancy index; by default only those the index cannot
rule out), `UnitProcessor.on_status`, the changed values encoded. Prints the ms, the
entries decoded (what the index saves, whatever the machine's load) and a SHA-256
over the effects and the stored unit value: every way must agree.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import time
from datetime import UTC, datetime, timedelta

import orjson

from schemas.dead_letter import DeadLetterSource
from schemas.plan import SlaPlan, load_plan
from streams.engine.messages import Occupancy
from streams.engine.occupancy_index import IndexedEntries, OccupancyIndex, decode_entry
from streams.engine.unit_processor import (
    OccupancyEntry,
    StoredEntries,
    UnitEffects,
    UnitProcessor,
    UnitSlot,
)
from streams.rules.facts import DowntimeRecord, to_ms

T0 = datetime(2027, 3, 1, tzinfo=UTC)
UNIT = "DYE-BENCH"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SHAPES = ("spread", "retracted", "tombstones")
LEFT = 1_000
"""The orders that left the state in the `tombstones` shape (`max_unit_left_orders`)."""


def _record(n: int, status: str, at_ms: int) -> DowntimeRecord:
    at = T0 + timedelta(milliseconds=at_ms)
    return DowntimeRecord(f"s-{n}", UNIT, "dyeing", status, "power_outage", at)


def _source(offset: int) -> DeadLetterSource:
    return DeadLetterSource(kind="kafka", topic="unit-status", partition=0, offset=offset)


class _Unit:
    """A unit built as the engine builds it: its status records and the orders' reports
    through `UnitProcessor`, every entry kept as the table keeps it."""

    def __init__(self, plan: SlaPlan) -> None:
        self.processor = UnitProcessor(plan)
        self.slot = UnitSlot(UNIT)
        self.entries: dict[str, OccupancyEntry] = {}
        self.now = T0 + timedelta(days=30)
        self.statuses = 0
        self.inbox = 0

    def status(self, status: str, at_ms: int) -> None:
        n = self.statuses
        self.statuses += 1
        effects = self.processor.on_status(
            self.slot, _record(n, status, at_ms), dict(self.entries), self.now, _source(n), b"{}"
        )
        self._apply(effects)

    def reports(self, reports: list[Occupancy]) -> None:
        for first in range(0, len(reports), 500):
            batch = reports[first : first + 500]
            effects = self.processor.on_occupancies(
                self.slot, batch, {r.order_id: self.entries.get(r.order_id) for r in batch},
                self.now, lambda: dict(self.entries), [(self.inbox, n) for n in range(len(batch))],
            )  # fmt: skip
            self.inbox += 1
            self._apply(effects)

    def _apply(self, effects: UnitEffects) -> None:
        self.entries.update(effects.changed_entries)
        for order_id in effects.forgotten:
            self.entries.pop(order_id, None)

    def stored(self) -> tuple[bytes, dict[str, bytes]]:
        """The unit's stored value and its occupancy table (key `unit|order` -> value)."""
        table = {f"{UNIT}|{o}": orjson.dumps(e.to_json()) for o, e in self.entries.items()}
        return orjson.dumps(self.slot.to_json()), table


def _visit(order_id: str, start: int, hours: int = 4) -> Occupancy:
    return Occupancy(order_id, UNIT, 1, [["dyeing", 1, start, start + hours * HOUR_MS]])


def unit_with(
    orders: int, overlap_pct: float, plan: SlaPlan, shape: str = "spread"
) -> tuple[bytes, dict[str, bytes]]:
    """The unit's stored value and its occupancy table (key `unit|order` -> value)."""
    unit = _Unit(plan)
    base = to_ms(T0)
    inside = base + DAY_MS + HOUR_MS // 2  # a visit of an hour inside the downtime
    unit.status("down", DAY_MS)
    if shape != "retracted":
        unit.status("up", DAY_MS + 2 * HOUR_MS)
    every = round(100 / overlap_pct) if overlap_pct else 0
    reports = []
    for k in range(orders):
        if every and k % every == 0:
            reports.append(_visit(f"PO-{k:06d}", inside, hours=1))
        else:  # days 2-29, after the downtime ended
            reports.append(
                _visit(f"PO-{k:06d}", base + 2 * DAY_MS + (k * 7_919_000) % (27 * DAY_MS))
            )
    if shape == "tombstones":
        reports += [_visit(f"PO-LEFT-{k:04d}", inside, hours=1) for k in range(LEFT)]
    unit.reports(reports)
    if shape == "retracted":  # the `up` of day 1 comes late: no visit overlaps the downtime
        unit.status("up", DAY_MS + 2 * HOUR_MS)
    elif shape == "tombstones":
        unit.reports([Occupancy(f"PO-LEFT-{k:04d}", UNIT, 1, forget=True) for k in range(LEFT)])
    return unit.stored()


def one_status(
    plan: SlaPlan, value: bytes, table: dict[str, bytes], every: bool
) -> tuple[float, int, str]:
    """(CPU seconds, entries decoded, digest of the effects)."""
    processor = UnitProcessor(plan)
    record = _record(1_000, "down", 30 * DAY_MS)
    index = OccupancyIndex.rebuild(table.items())
    decoded = 0

    def load(order_id: str) -> OccupancyEntry:
        nonlocal decoded
        decoded += 1
        return decode_entry(table[f"{UNIT}|{order_id}"])

    gc.collect()
    started = time.process_time()
    slot = UnitSlot.from_json(orjson.loads(value))
    if every:
        prefix = f"{UNIT}|"
        occupancy: dict[str, OccupancyEntry] | StoredEntries = {
            key[len(prefix) :]: decode_entry(raw) for key, raw in table.items()
        }
        decoded = len(table)
    else:
        occupancy = IndexedEntries(index.of(UNIT), load)
    now = T0 + timedelta(days=30)
    effects = processor.on_status(slot, record, occupancy, now, _source(1_000), b"{}")
    stored = orjson.dumps(slot.to_json())
    changed = {o: orjson.dumps(e.to_json()) for o, e in effects.changed_entries.items()}
    elapsed = time.process_time() - started
    return elapsed, decoded, _digest(effects, stored, changed)


def _digest(effects: UnitEffects, stored: bytes, changed: dict[str, bytes]) -> str:
    digest = hashlib.sha256(stored)
    for answer in effects.answers:
        digest.update(answer.encode())
    for alert in effects.alerts:
        digest.update(orjson.dumps(alert))
    for order_id, raw in changed.items():
        digest.update(order_id.encode() + raw)
    digest.update(orjson.dumps(sorted(effects.forgotten)))
    for letter in effects.dead_letters:
        digest.update(letter.encode())
    digest.update(b"changed" if effects.changed else b"same")
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--orders", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--overlap", type=float, nargs="+", default=[0, 1])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--every", action="store_true", help="decode every entry (as before)")
    args = parser.parse_args()
    plan = load_plan(None)
    for shape in args.shape:
        for orders in args.orders:
            for overlap in args.overlap if shape == "spread" else [0]:
                value, table = unit_with(orders, overlap, plan, shape)
                runs = [one_status(plan, value, table, args.every) for _ in range(args.repeat)]
                digests = {d for _, _, d in runs}
                assert len(digests) == 1, "the same input gave different effects"
                best = min(s for s, _, _ in runs) * 1000
                print(f"{shape:<10}  entries {len(table):>6}  overlap {overlap:g} %  "
                      f"decoded {runs[0][1]:>6}  best CPU {best:8.2f} ms  "
                      f"sha256 {digests.pop()[:16]}")  # fmt: skip


if __name__ == "__main__":
    main()
