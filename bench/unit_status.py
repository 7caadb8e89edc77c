"""Benchmark: one unit status record at a unit with N occupancy entries, pure path, no Kafka.

    .venv/bin/python bench/unit_status.py [--orders 1000 10000 50000] [--overlap 0 1] [--repeat 5]

The unit was down for two hours on day 1; N orders then report one closed
four-hour visit each, spread over days 2-29 (`--overlap P`: P % of them inside
the downtime instead, answered with it). Timed (CPU, best of `--repeat`): a
`down` on day 30 taken as `UnitAgents.on_status` takes it: the unit's value
loaded, its entries read from the table (`--every`: every entry decoded, as
before the occupancy index; by default only those the index cannot rule out),
`UnitProcessor.on_status`, the changed values encoded. Prints the ms and a
SHA-256 over the effects and the stored unit value: the two ways must agree.
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


def _record(n: int, status: str, at_ms: int) -> DowntimeRecord:
    at = T0 + timedelta(milliseconds=at_ms)
    return DowntimeRecord(f"s-{n}", UNIT, "dyeing", status, "power_outage", at)


def _source(offset: int) -> DeadLetterSource:
    return DeadLetterSource(kind="kafka", topic="unit-status", partition=0, offset=offset)


def unit_with(orders: int, overlap_pct: float, plan: SlaPlan) -> tuple[bytes, dict[str, bytes]]:
    """The unit's stored value and its occupancy table (key `unit|order` -> value)."""
    processor = UnitProcessor(plan)
    slot = UnitSlot(UNIT)
    now = T0 + timedelta(days=30)
    base = to_ms(T0)
    for n, (status, at) in enumerate([("down", DAY_MS), ("up", DAY_MS + 2 * HOUR_MS)]):
        processor.on_status(slot, _record(n, status, at), {}, now, _source(n), b"{}")
    every = round(100 / overlap_pct) if overlap_pct else 0
    entries: dict[str, OccupancyEntry] = {}
    reports = []
    for k in range(orders):
        if every and k % every == 0:  # inside the downtime
            start = base + DAY_MS + HOUR_MS // 2
            end = start + HOUR_MS
        else:  # days 2-29, after the downtime ended
            start = base + 2 * DAY_MS + (k * 7_919_000) % (27 * DAY_MS)
            end = start + 4 * HOUR_MS
        reports.append(Occupancy(f"PO-{k:06d}", UNIT, 1, [["dyeing", 1, start, end]]))
    for offset, first in enumerate(range(0, orders, 500)):
        batch = reports[first : first + 500]
        effects = processor.on_occupancies(
            slot, batch, {r.order_id: entries.get(r.order_id) for r in batch}, now,
            lambda: dict(entries), [(offset, n) for n in range(len(batch))],
        )  # fmt: skip
        entries.update(effects.changed_entries)
    table = {f"{UNIT}|{o}": orjson.dumps(e.to_json()) for o, e in entries.items()}
    return orjson.dumps(slot.to_json()), table


def one_status(
    plan: SlaPlan, value: bytes, table: dict[str, bytes], every: bool
) -> tuple[float, str]:
    processor = UnitProcessor(plan)
    record = _record(2, "down", 30 * DAY_MS)
    index = OccupancyIndex.rebuild(table.items())
    gc.collect()
    started = time.process_time()
    slot = UnitSlot.from_json(orjson.loads(value))
    if every:
        prefix = f"{UNIT}|"
        occupancy: dict[str, OccupancyEntry] | StoredEntries = {
            key[len(prefix) :]: decode_entry(raw) for key, raw in table.items()
        }
    else:
        occupancy = IndexedEntries(
            index.of(UNIT),
            lambda order_id: decode_entry(table[f"{UNIT}|{order_id}"]),
        )
    now = T0 + timedelta(days=30)
    effects = processor.on_status(slot, record, occupancy, now, _source(2), b"{}")
    stored = orjson.dumps(slot.to_json())
    changed = {o: orjson.dumps(e.to_json()) for o, e in effects.changed_entries.items()}
    elapsed = time.process_time() - started
    return elapsed, _digest(effects, stored, changed)


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
    parser.add_argument("--orders", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--overlap", type=float, nargs="+", default=[0, 1])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--every", action="store_true", help="decode every entry (as before)")
    args = parser.parse_args()
    plan = load_plan(None)
    for orders in args.orders:
        for overlap in args.overlap:
            value, table = unit_with(orders, overlap, plan)
            runs = [one_status(plan, value, table, args.every) for _ in range(args.repeat)]
            digests = {d for _, d in runs}
            assert len(digests) == 1, "the same input gave different effects"
            best = min(s for s, _ in runs) * 1000
            print(f"entries {orders:>6}  overlap {overlap:g} %  best CPU {best:8.2f} ms  "
                  f"sha256 {digests.pop()[:16]}")  # fmt: skip


if __name__ == "__main__":
    main()
