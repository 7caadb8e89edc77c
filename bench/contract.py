"""Contract validation cost: µs per record of `decode_input`, per input type.

    .venv/bin/python bench/contract.py [--orders-per-day 300] [--repeat 5] [--json]

No Kafka. The records are the simulator's (`simulator/`), so the mix
of optional fields, offsets and attributes is what production-like traffic
carries; `invalid` are the simulator's broken records (every input type
mixed). Each type is decoded in a loop, best of `--repeat` runs of this
process's CPU time (the least disturbed by other load on the machine). For
reference the same bytes are also parsed by `orjson.loads` (a bare JSON parse,
no validation).

The script adapts to `decode_input`'s signature, so the same file measures a
checkout before and after a change of the contract code.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

import orjson

from schemas.plan import load_plan
from schemas.validation import RecordRejected, decode_input
from simulator import SimConfig, simulate

TYPES = ("orders", "crm.customers", "scans", "unit-status", "invalid")


def samples(
    orders_per_day: int, invalid_share: float
) -> dict[str, list[tuple[str, bytes | None, bytes | None]]]:
    """Records by type: (topic, key, value)."""
    config = SimConfig(seed=7, days=3, orders_per_day=orders_per_day, invalid_share=invalid_share)
    out: dict[str, list[tuple[str, bytes | None, bytes | None]]] = defaultdict(list)
    for record in simulate(config):
        kind = record.topic if record.valid else "invalid"
        if record.value is None and kind != "invalid":
            continue  # tombstones cost nothing to decode
        out[kind].append((record.topic, record.key_bytes(), record.value_bytes()))
    return out


def decoder() -> Callable[[str, bytes | None, bytes | None], Any]:
    plan = load_plan(None)
    params = inspect.signature(decode_input).parameters
    call: Any = decode_input
    if "plan" in params:
        return lambda topic, key, value: call(topic, value, plan=plan, key=key)
    return lambda topic, key, value: call(topic, value, qc_stage=plan.qc_stage)


def measure(
    records: list[tuple[str, bytes | None, bytes | None]], repeat: int
) -> tuple[float, float, int]:
    """(µs/record decode_input, µs/record orjson.loads, rejected count)."""
    decode = decoder()
    rejected = 0
    for topic, key, value in records:
        try:
            decode(topic, key, value)
        except RecordRejected:
            rejected += 1
    best = best_json = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for topic, key, value in records:
            with contextlib.suppress(RecordRejected):
                decode(topic, key, value)
        best = min(best, time.process_time() - started)
        started = time.process_time()
        for _topic, _key, value in records:
            with contextlib.suppress(orjson.JSONDecodeError):
                orjson.loads(value or b"null")
        best_json = min(best_json, time.process_time() - started)
    n = len(records)
    return best / n * 1e6, best_json / n * 1e6, rejected


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--orders-per-day", type=int, default=300)
    parser.add_argument("--invalid-share", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args()
    by_type = samples(args.orders_per_day, args.invalid_share)
    results: dict[str, dict[str, float]] = {}
    for kind in TYPES:
        records = by_type.get(kind, [])
        if not records:
            continue
        us, json_us, rejected = measure(records, args.repeat)
        mean_size = sum(len(v or b"") for _, _, v in records) / len(records)
        results[kind] = {
            "records": len(records),
            "bytes": round(mean_size),
            "decode_us": round(us, 2),
            "orjson_us": round(json_us, 2),
            "rejected": rejected,
        }
    if args.json:
        print(json.dumps(results))
        return 0
    machine = f"{platform.machine()} {platform.python_implementation()}"
    print(f"machine: {machine} {platform.python_version()}")
    head = ("type", "records", "bytes", "decode µs", "orjson µs", "rejected")
    print(f"{head[0]:14} {head[1]:>8} {head[2]:>6} {head[3]:>10} {head[4]:>10} {head[5]:>8}")
    for kind, r in results.items():
        print(
            f"{kind:14} {r['records']:>8} {r['bytes']:>6} {r['decode_us']:>10.2f}"
            f" {r['orjson_us']:>10.2f} {r['rejected']:>8}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
