"""Benchmark: the engine's pure order path, no Kafka (issue 9 item 2), with an output hash.

    .venv/bin/python bench/engine_pure.py [--events 16000] [--batch 1] [--repeat 3]

A simulated scenario's `orders` and `scans` records are decoded (`decode_input`,
not timed) and taken per order exactly as the agents do: load the slot from
its stored bytes, `OrderProcessor.on_inputs`, store the slot's bytes, serialise
every output (alerts, snapshot, dead letters, join messages). `--batch N`
groups N consecutive records per order as the batched agents do (1: the
per-record path). Prints events/s (CPU time, best of `--repeat`) and a SHA-256
over every output and every stored slot in order: a change that makes the
engine faster must keep the hash of the same `--batch` identical.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from schemas.orders import OrderRecord
from schemas.plan import SlaPlan, load_plan
from schemas.scans import ScanEvent
from schemas.validation import RecordRejected, decode_input
from simulator import SimConfig, write_scenario
from streams.engine.clock import EngineClock
from streams.engine.order_processor import Effects, OrderProcessor, RecordPosition
from streams.engine.order_slot import decode_slot, evicted_json
from streams.rules.facts import from_ms, to_ms

Record = tuple[str, int, ScanEvent | OrderRecord, bytes]
"""(topic, offset, decoded record, raw value)"""


def scenario(events: int, seed: int, plan: SlaPlan) -> list[Record]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pure.ndjson"
        orders = max(1, round(events / 16.3))
        days = max(1, min(30, orders // 1000))
        config = SimConfig(seed=seed, days=days, orders_per_day=max(1, orders // days))
        write_scenario(path, config)
        lines = path.read_bytes().splitlines()
    records: list[Record] = []
    offsets = {"orders": 0, "scans": 0}
    for line in lines:
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the simulator's deliberately broken lines
        topic = body.get("topic") if isinstance(body, dict) else None
        if topic not in offsets or "value" not in body:
            continue
        raw = orjson.dumps(body["value"])
        offsets[topic] += 1
        try:
            value = decode_input(topic, raw, plan=plan)
        except RecordRejected:
            continue
        assert isinstance(value, ScanEvent | OrderRecord)
        records.append((topic, offsets[topic], value, raw))
    return records


def run(records: list[Record], plan: SlaPlan, batch: int) -> tuple[float, str]:
    processor = OrderProcessor(plan)
    clock = EngineClock("event")
    table: dict[str, bytes] = {}
    digest = hashlib.sha256()
    started = time.process_time()
    if batch > 1:
        from streams.engine.order_processor import Arrival  # the batched engine's API
    for start in range(0, len(records), batch):
        groups: dict[str, list[Any]] = {}
        for topic, offset, value, raw in records[start : start + batch]:
            before = clock.now(0)
            event_time = value.event_time if isinstance(value, ScanEvent) else (
                value.event_time or value.placed_at
            )  # fmt: skip
            now = clock.observe(0, None if event_time is None else to_ms(event_time))
            position = RecordPosition(topic, 0, offset)
            groups.setdefault(value.order_id, []).append(
                (value, from_ms(now), position, raw, before)
            )
        for order_id, arrivals in groups.items():
            slot = decode_slot(order_id, table.get(order_id))
            assert slot is not None
            slot.partition = 0
            if batch == 1:  # the per-record API (also on main before batching)
                ((value, now_dt, position, raw, _),) = arrivals
                if isinstance(value, ScanEvent):
                    effects = processor.on_scan(slot, value, position, raw, now_dt)
                else:
                    effects = processor.on_order_record(slot, value, position, raw, now_dt)
            else:
                effects = processor.on_inputs(slot, [Arrival(*a) for a in arrivals])
            if effects.evicted:
                table[order_id] = orjson.dumps(evicted_json(slot))
            elif effects.changed:
                table[order_id] = orjson.dumps(slot.to_json())
            _hash(digest, effects, table.get(order_id))
    return time.process_time() - started, digest.hexdigest()


def _hash(digest: Any, effects: Effects, stored: bytes | None) -> None:
    for alert in effects.alerts:
        digest.update(orjson.dumps(alert))
    digest.update(effects.snapshot or b"-")
    for letter in effects.dead_letters:
        digest.update(letter.encode())
    for sub in effects.subscriptions:
        digest.update(sub.encode())
    for occ in effects.occupancy:
        digest.update(occ.encode())
    digest.update(stored or b"-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=16_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one run instead")
    args = parser.parse_args()
    plan = load_plan(None)
    records = scenario(args.events, args.seed, plan)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(run, records, plan, args.batch)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    results = [run(records, plan, args.batch) for _ in range(args.repeat)]
    hashes = {h for _, h in results}
    assert len(hashes) == 1, "the same input gave different outputs"
    best = min(s for s, _ in results)
    print(f"records {len(records)}  batch {args.batch}  best CPU {best:.2f} s  "
          f"{len(records) / best:,.0f} events/s  sha256 {hashes.pop()}")  # fmt: skip


if __name__ == "__main__":
    main()
