"""A worker fleet on one box (issue 14 item 4): same alerts with 1, 2 or 4 workers.

Replays one simulated scenario (default ~50,000 records) in event time over
8 partitions with each fleet size, and once with 4 workers of which one is
killed (SIGKILL) mid-run and a fifth added, and compares every run's final
alerts and dead-letter count with the in-memory oracle over the same file
(`streams.rules.oracle`, what any correct engine ends with; the replay tests
show one worker gives exactly that). Prints the wall time of each run. The run
with the kill also says what makes it one: the killed worker had handled
records it had not committed (the workers that took its partitions handled them
again), and the added worker took partitions (`FleetRun.kill_unproven`).

On a 2-core machine the engine is CPU-bound, so more workers are not faster
here: the point is correctness under rebalancing. Far too slow for the suite;
`make test-fleet` runs the opt-in test (tests/scale/test_fleet.py) that uses
the same steps.

    .venv/bin/python bench/fleet.py [--orders-per-day 105 --days 30] [--runs 1,2,4,4k]

Needs a broker: `chainwatch kafka start` (or CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka.admin import OffsetSpec
from kafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from chainwatch.errors import USER_ERRORS
from chainwatch.kafka_admin import bounded, close_admin, settings_admin_client
from chainwatch.replay import (
    ReplayRun,
    committed_offsets,
    no_progress,
    probe_timeout_s,
    scenario_texts,
    worker_log,
)
from chainwatch.settings import Settings
from chainwatch.topic_partitions import input_topics
from schemas.plan import load_plan
from schemas.topics import INPUT_TOPICS
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

    killed_owned: frozenset[int] | None = None
    """The partitions the killed worker owned when it was killed (None: no kill)."""
    killed_handled: int | None = None
    """Input records the killed worker had handled (their step done, its outputs sent),
    at least, when it was killed: all from those partitions, the only ones it owned."""
    killed_committed: int | None = None
    """Input records of those partitions the group had committed, at most, at the kill."""
    added_owned: frozenset[int] | None = None
    """The partitions the added worker owned at the end (None: no worker added)."""

    def stalls(self) -> str:
        """', workers replaced N x after a stall', or nothing: said beside every result."""
        n = self.stall_restarts
        return f", workers replaced {n}x after a stall" if n else ""

    def kill(self) -> str:
        """What the kill and the addition did, or nothing (a run without them)."""
        if self.killed_owned is None:
            return ""
        return (
            f"; the killed worker owned partitions {sorted(self.killed_owned)}, had handled "
            f"{self.killed_handled} input records of which {self.killed_committed} were "
            f"committed; the added one took {sorted(self.added_owned or ())}"
        )

    def kill_unproven(self) -> str | None:
        """Why a run with a kill and an addition does not show what it is for, or None.

        A worker killed with all it handled committed leaves nobody anything to
        handle again, and a worker added that owns no partition only joined the group:
        such a run ends like one without them and proves nothing about either. Nor does
        a kill of a worker whose partitions its log did not show: its handled records
        were compared with the committed offsets of no partition (0 of 0), so any record
        it had handled passed for one left to redo, and it was killed at once."""
        if self.killed_owned is None:
            return None
        if not self.killed_owned:
            return (
                f"{self.label}: the killed worker's partitions were not in its log (faust's "
                "table of active changelog partitions): what it handled was compared with "
                "nothing"
            )
        if (self.killed_handled or 0) <= (self.killed_committed or 0):
            return (
                f"{self.label}: the killed worker had committed all it handled "
                f"({self.killed_handled} input records, {self.killed_committed} committed)"
            )
        if not self.added_owned:
            return f"{self.label}: the added worker owned no partition at the end"
        return None


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


ACTIVE_TABLE = "Highwater for active changelog partitions:"
"""What faust's recovery logs at each rebalance before a table, one row per active
changelog partition of the worker (`faust.tables.recovery`)."""
ROW = re.compile(r"^\|\s*\S+\s*\|\s*(\d+)\s*\|")


def log_lines(log: Path) -> Iterator[str]:
    """A worker log's lines, a JSON record's event split into its lines (the table)."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                yield from str(json.loads(line).get("event", "")).splitlines()
                continue
            except (json.JSONDecodeError, AttributeError):
                pass
        yield line


def owned_partitions(log: Path) -> frozenset[int] | None:
    """The partitions a worker owned after the last rebalance its log shows (None: it
    shows none). Every table's changelog is co-partitioned with the inputs (one topic
    group of 8 partitions: the same numbers go together), so the numbers of its active
    changelog partitions are those of its inputs."""
    owned: set[int] | None = None
    in_table = False
    for line in log_lines(log):
        if ACTIVE_TABLE in line:
            owned, in_table = set(), True
        elif in_table and owned is not None and line.startswith(("|", "+")):
            if row := ROW.match(line):
                owned.add(int(row.group(1)))
        else:
            in_table = False
    return None if owned is None else frozenset(owned)


SCRAPE_TIMEOUT_S = 10.0
"""Deadline of one worker's `/metrics` answer."""


def handled_records(host: str, port: int) -> int:
    """Input records a worker has handled, every outcome (`chainwatch_worker_records`,
    counted once a record's step is done and its outputs sent), from its `/metrics`."""
    url = f"http://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as answer:
            text = answer.read().decode()
    except OSError as exc:  # refused, timed out, an HTTP error
        raise RuntimeError(f"a worker's {url} did not answer: {exc}") from None
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "chainwatch_worker_records"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("topic") in INPUT_TOPICS
        )
    )


class InputOffsets:
    """The records of the inputs' `partitions`, published and committed by the engine's
    group, over one admin connection. The replay publishes them with no transaction (no
    markers), from offset 0: an offset is a record."""

    def __init__(self, settings: Settings, partitions: Iterable[int]) -> None:
        self.settings = settings
        self.tps = [TopicPartition(t, p) for t in input_topics(settings) for p in partitions]
        self.admin = settings_admin_client(settings.kafka)

    def read(self) -> tuple[int, int]:
        """(committed, published), within `probe_timeout_s`."""

        def counts() -> tuple[int, int]:
            committed = committed_offsets(self.admin, self.settings) or {}
            ends = self.admin.list_partition_offsets(dict.fromkeys(self.tps, OffsetSpec.LATEST))
            done = sum(max(0, committed[tp].offset) for tp in self.tps if tp in committed)
            return done, sum(ends[tp].offset for tp in self.tps)

        return bounded(counts, timeout_s=probe_timeout_s(self.settings), what="the group's offsets")

    def close(self) -> None:
        close_admin(self.admin)


KILL_WITHIN_S = 60.0
"""How long a window's end may look for a moment to kill the worker with work in hand."""
KILL_POLL_S = 0.05
"""How often it looks: a step's records are handled some 0.2 s before they are committed."""


def kill_with_work_in_hand(
    settings: Settings, victim: subprocess.Popen[bytes], port: int, offsets: InputOffsets
) -> tuple[int, int] | None:
    """SIGKILL `victim` at a moment it has handled records of `offsets`' partitions that
    are not committed yet: what it handled and what the group committed, as of the kill
    (more handled than committed), or None, the victim alive, once all its records were
    committed or `KILL_WITHIN_S` passed (a later moment may serve).

    What it handled is read from its `/metrics`, then it is frozen (SIGSTOP) so that the
    committed offsets are read with nothing moving: with more handled, it is killed
    frozen; else thawed (SIGCONT) and looked at again. A freeze lasts one offsets read,
    far below the group's session timeout."""
    deadline = time.monotonic() + KILL_WITHIN_S
    while time.monotonic() < deadline:
        handled = handled_records(settings.metrics_host, port)
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            committed, published = offsets.read()
            if handled > committed:
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(timeout=30)
                # a commit it sent before the freeze may land after the read above;
                # its partitions go to no one before the group rebalances
                return handled, offsets.read()[0]
        finally:
            if victim.poll() is None:
                os.kill(victim.pid, signal.SIGCONT)
        if committed >= published:
            return None
        time.sleep(KILL_POLL_S)
    return None


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

    With `kill_and_add`, one worker is killed (SIGKILL) once an event-time window
    after the start has been sent, while the fleet works on it, at a moment it has
    handled records it has not committed (`kill_with_work_in_hand`; at the first
    window's end that has one, at the last at the latest), and a new one joins: two
    rebalances mid-run. What the killed worker owned, handled and had committed, and
    what the added one took, are read from their logs, the killed one's metrics and
    the group's offsets (`FleetRun.kill_unproven`).
    """
    run = ReplayRun(settings, scenario, partitions=PARTITIONS, progress=no_progress)
    killed: tuple[frozenset[int], int, int] | None = None
    added_n = -1  # the added worker's number (`worker_log`)

    def kill_one_add_one(window: int) -> None:
        nonlocal killed, added_n
        if not kill_and_add or killed is not None:
            return
        live = [w for w in run.workers if w.poll() is None]  # after a stall, the new ones
        if len(live) < workers:
            raise RuntimeError(f"{workers - len(live)} worker(s) exited on their own")
        victim = live[min(1, len(live) - 1)]
        port = run.ops_ports[victim.pid]
        # no member left or joined since the group formed: its last table is its partitions
        owned = owned_partitions(worker_log(run.settings, run.workers.index(victim)))
        owned = owned or frozenset()
        offsets = InputOffsets(run.settings, owned)
        try:
            counts = kill_with_work_in_hand(run.settings, victim, port, offsets)
            if counts is None and window != -1:
                return  # all it had was committed: the next window's end
            if counts is None:  # the last chance: killed anyway, said by `kill_unproven`
                handled = handled_records(run.settings.metrics_host, port)
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(timeout=30)
                counts = handled, offsets.read()[0]
        finally:
            offsets.close()
        killed = (owned, *counts)
        added_n = len(run.workers)
        run.start_workers(1, first=added_n)  # a new member: another rebalance

    try:
        started = time.monotonic()
        run.prepare_topics()
        run.start_workers(workers)
        run.wait_for_group(workers)
        run.publish(timeout_s=timeout_s, on_window=kill_one_add_one)
        kill_one_add_one(-1)  # the last window: kill while the fleet works on it
        run.finish(until, timeout_s=timeout_s)
        wall = time.monotonic() - started
        result = run.results()
        added = owned_partitions(worker_log(run.settings, added_n)) if killed else None
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
        killed_owned=None if killed is None else killed[0],
        killed_handled=None if killed is None else killed[1],
        killed_committed=None if killed is None else killed[2],
        added_owned=added,
    )


MAX_WORKERS = 16
"""As `chainwatch replay --workers`: the runs are replays, over `PARTITIONS` partitions."""


def fleet_sizes(text: str) -> list[tuple[int, bool]]:
    """`--runs`: comma-separated worker counts, each 1-16, `k` after one for a kill and an
    addition. `--runs 0` started a replay without workers that waited for ever, and
    `--runs x` ended in a traceback after the scenario and the reference engine's run."""
    sizes = []
    for spec in text.split(","):
        count = spec.strip().removesuffix("k")
        if not count.isdigit() or not 1 <= int(count) <= MAX_WORKERS:
            raise argparse.ArgumentTypeError(
                f"{spec!r} is no fleet size: give 1-{MAX_WORKERS} workers, `k` after the "
                "number to kill one and add one (1,2,4,4k)"
            )
        sizes.append((int(count), spec.strip().endswith("k")))
    return sizes


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 1 or more")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, refused with argparse's usage line and exit status 2 before
    anything is simulated (a bad `--days` ended in `chainwatch simulate`'s traceback)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--days", type=_positive, default=30)
    parser.add_argument("--orders-per-day", type=_positive, default=105)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--runs",
        type=fleet_sizes,
        default="1,2,4,4k",
        help="fleet sizes; `k`: kill one worker and add one",
    )
    parser.add_argument(
        "--timeout-s", type=float, default=3600, help="deadline of each run's drain"
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
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
        for workers, kill in args.runs:
            spec = f"{workers}{'k' if kill else ''}"
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
                f"{fleet.stalls()}{fleet.kill()}",
                flush=True,
            )
            for problem in (diff, fleet.kill_unproven()):
                if problem is not None:
                    print(f"  {problem}", flush=True)
    print(f"machine: nproc {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
