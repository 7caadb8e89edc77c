"""Benchmark: how fast `chainwatch simulate` writes a scenario file, and how much memory it holds.

    .venv/bin/python bench/simulate.py [--days 30] [--orders-per-day 2000]

Prints records, wall and CPU seconds, records/s and the peak RSS. The file is
written to a temporary directory and deleted.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from simulator import SimConfig, write_scenario


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--orders-per-day", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    config = SimConfig(seed=args.seed, days=args.days, orders_per_day=args.orders_per_day)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.ndjson"
        wall, cpu = time.perf_counter(), time.process_time()
        summary = write_scenario(path, config)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = path.stat().st_size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"days={args.days} orders/day={args.orders_per_day} records={summary.records}")
    print(f"file={size / 1e6:.0f} MB wall={wall:.1f}s cpu={cpu:.1f}s")
    print(f"rate={summary.records / wall:.0f} records/s (wall), peak RSS={peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
