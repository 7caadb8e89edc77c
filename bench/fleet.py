"""A worker fleet on one box (issue 14 item 4): same alerts with 1, 2 or 4 workers.

Replays one simulated scenario (default ~50,000 records) in event time over
8 partitions with each fleet size, and once with 4 workers of which one is
killed (SIGKILL) mid-run and a fifth added, and compares every run's final
alerts and dead-letter count with the in-memory oracle over the same file
(`streams.rules.oracle`, what any correct engine ends with; the replay tests
show one worker gives exactly that). Prints the wall time of each run.

On a 2-core machine the engine is CPU-bound, so more workers are not faster
here: the point is correctness under rebalancing. Far too slow for the suite;
`make test-fleet` runs the opt-in test (tests/scale/test_fleet.py) that uses
the same steps.

    .venv/bin/python bench/fleet.py [--orders-per-day 105 --days 30] [--runs 1,2,4,4k]

Needs a broker: `chainwatch kafka start` (or CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chainwatch.errors import USER_ERRORS
from chainwatch.replay import ReplayRun, no_progress, scenario_texts
from chainwatch.settings import Settings
from schemas.plan import load_plan
from streams.engine.limits import EngineLimits
from streams.rules.oracle import run_scenario

PARTITIONS = 8
START = datetime(2027, 3, 1, tzinfo=UTC)  # the simulator's default start


@dataclass(frozen=True)
class FleetRun:
    label: str
    workers: int
    wall_s: float
    published: int
    alerts: dict[str, dict[str, Any]]
    dead_letters: int
    stall_restarts: int = 0
    """Times the replay replaced stuck workers (`wait_until_idle`): a fleet that stalled
    may still end with the right alerts, after a restart it should not have needed (or a
    batch longer than the watchdog's patience, on a very busy machine)."""

    def stalls(self) -> str:
        """', workers replaced N x after a stall', or nothing: said beside every result."""
        n = self.stall_restarts
        return f", workers replaced {n}x after a stall" if n else ""


def simulate(path: Path, *, days: int, orders_per_day: int, seed: int) -> Path:
    subprocess.run(
        [
            sys.executable, "-m", "chainwatch", "simulate", "--out", str(path),
            "--days", str(days), "--orders-per-day", str(orders_per_day), "--seed", str(seed),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )  # fmt: skip
    return path


def until_for(days: int) -> datetime:
    """Late enough for every simulated order to have finished or become overdue."""
    return START + timedelta(days=days + 30)


def reference(
    scenario: Path, until: datetime, limits: EngineLimits
) -> tuple[dict[str, dict[str, Any]], int]:
    """The reference engine's alerts and dead-letter count, under the workers' own limits
    (`settings.engine.limits()`): a retention set by the environment reaches both sides;
    and with the runs' partitions, whose clocks decide when a closed order is evicted."""
    retention = timedelta(milliseconds=limits.closed_order_retention_ms)
    result = run_scenario(
        scenario_texts(scenario),  # the lines as the replay reads them
        load_plan(None),
        until,
        closed_order_retention=retention,
        partitions=PARTITIONS,
    )
    return {a.alert_id: a.model_dump(mode="json") for a in result.alerts}, result.dead_letters


def differences(
    expected: dict[str, dict[str, Any]], expected_dead: int, run: FleetRun, *, examples: int = 3
) -> str | None:
    """None if the run ended with the reference's alerts and dead-letter count, else a
    short account (counts and a few alert ids) a person can act on: a dict diff of
    tens of thousands of alerts helps nobody."""
    missing = sorted(expected.keys() - run.alerts.keys())
    extra = sorted(run.alerts.keys() - expected.keys())
    differ = sorted(k for k in expected.keys() & run.alerts.keys() if expected[k] != run.alerts[k])
    if not (missing or extra or differ) and run.dead_letters == expected_dead:
        return None
    fields = sorted({
        f for k in differ for f in expected[k].keys() | run.alerts[k].keys()
        if expected[k].get(f) != run.alerts[k].get(f)
    })  # fmt: skip
    return (
        f"{run.label}: {len(missing)} alerts missing {missing[:examples]}, "
        f"{len(extra)} extra {extra[:examples]}, {len(differ)} differing {differ[:examples]} "
        f"(fields {fields}), dead letters {run.dead_letters} vs {expected_dead} expected"
        f"{run.stalls()}"
    )


def run_fleet(
    settings: Settings,
    scenario: Path,
    *,
    workers: int,
    until: datetime,
    kill_and_add: bool = False,
    timeout_s: float = 3600,
    label: str | None = None,
) -> FleetRun:
    """Run `workers` workers, publish the scenario paced by event time, finish.

    With `kill_and_add`, one worker is killed (SIGKILL) right after the first
    event-time window after the start has been sent, while the fleet works on it,
    and a new one joins: two rebalances mid-run.
    """
    run = ReplayRun(settings, scenario, partitions=PARTITIONS, progress=no_progress)
    killed = False

    def kill_one_add_one(_window: int) -> None:
        nonlocal killed
        if not kill_and_add or killed:
            return
        victim = fleet[min(1, len(fleet) - 1)]
        if victim.poll() is not None:
            raise RuntimeError(f"worker exited on its own with {victim.returncode}")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        run.start_workers(1, first=workers)  # a new member: another rebalance
        killed = True

    try:
        started = time.monotonic()
        run.prepare_topics()
        fleet = run.start_workers(workers)
        run.wait_for_group(workers)
        run.publish(timeout_s=timeout_s, on_window=kill_one_add_one)
        kill_one_add_one(-1)  # a file of one window: kill while the fleet works on it
        run.finish(until, timeout_s=timeout_s)
        wall = time.monotonic() - started
        result = run.results()
    finally:
        run.close()
    return FleetRun(
        label or f"{workers} worker{'s' if workers > 1 else ''}",
        workers,
        wall,
        result.published,
        {a["alert_id"]: a for a in result.alerts},
        result.dead_letters,
        run.stall_restarts,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--orders-per-day", type=int, default=105)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--runs", default="1,2,4,4k", help="fleet sizes; `k`: kill one worker and add one"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=3600, help="deadline of each run's drain"
    )
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        scenario = simulate(
            Path(tmp) / "fleet.ndjson",
            days=args.days,
            orders_per_day=args.orders_per_day,
            seed=args.seed,
        )
        records = sum(1 for _ in scenario.open("rb"))
        until = until_for(args.days)
        t0 = time.monotonic()
        expected, expected_dead = reference(scenario, until, settings.engine.limits())
        print(
            f"scenario: {records} records, reference engine: {len(expected)} alerts, "
            f"{expected_dead} dead letters in {time.monotonic() - t0:.1f}s",
            flush=True,
        )
        for spec in args.runs.split(","):
            kill = spec.endswith("k")
            workers = int(spec.rstrip("k"))
            label = f"{workers} workers, one killed and one added" if kill else None
            try:
                fleet = run_fleet(
                    settings,
                    scenario,
                    workers=workers,
                    until=until,
                    kill_and_add=kill,
                    label=label,
                    timeout_s=args.timeout_s,
                )
            except (*USER_ERRORS, RuntimeError) as exc:
                print(f"{label or spec:<40} FAILED: {exc}", flush=True)
                continue
            diff = differences(expected, expected_dead, fleet)
            print(
                f"{fleet.label:<40} {PARTITIONS} partitions  wall {fleet.wall_s:7.1f}s  "
                f"{fleet.published / fleet.wall_s:6.0f} records/s  {len(fleet.alerts)} alerts  "
                f"{'SAME as the reference' if diff is None else 'DIFFERENT from the reference'}"
                f"{fleet.stalls()}",
                flush=True,
            )
            if diff is not None:
                print(f"  {diff}", flush=True)
    print(f"machine: nproc {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
