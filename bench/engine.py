"""Benchmark: the monitoring engine's throughput, deadline latency and memory (issue 4).

    CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:29092 \\
        .venv/bin/python bench/engine.py [--events 500000] [--open-orders 1000000]

Three measurements, printed side by side at the end:

1. Replay throughput: a simulated scenario of about `--events` records is
   published to fresh topics (not timed), then ONE worker is started; engine
   time runs from the worker's start to the moment its consumer group has
   committed every record (as `chainwatch replay` detects it). Next to it, a
   raw aiokafka consumer reads the same topics and decodes every record with
   `schemas.validation.decode_input`: the ceiling a Python consumer can reach.
2. Live deadline latency: one live worker, a producer pushing `--rate`
   records/s of simulated traffic, and probe orders whose start deadline falls
   due a few seconds after they are sent; latency = the alert record's Kafka
   timestamp minus the deadline (+ the plan's grace, 0 s in the shipped plan).
3. RSS of one worker holding open orders: `created` records only (no scans),
   measured at half and at all of `--open-orders` and extrapolated linearly to
   `--rss-target` when fewer were loaded (the output says so).

Not a test: it prints numbers. Every run uses its own topics and deletes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from chainwatch.replay import (
    ReplayRun,
    _lag,
    delete_run_topics,
    no_progress,
    start_workers,
    stop_workers,
)
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings
from schemas.common import format_utc
from schemas.plan import SlaPlan, load_plan
from schemas.validation import RecordRejected, decode_input, decode_replay_line
from simulator import SimConfig, write_scenario
from streams.topics import ALERTS, INPUT_TOPICS, ORDERS, TopicNames

RECORDS_PER_ORDER = 16.3  # measured on the simulator's default mix (about 16 per order)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_scenario(path: Path, events: int, *, start: datetime | None = None, seed: int = 7) -> int:
    """A simulated scenario of about `events` records; returns the exact count."""
    orders = max(1, round(events / RECORDS_PER_ORDER))
    days = max(1, min(30, orders // 1000))
    extra: dict[str, Any] = {} if start is None else {"start": start}
    config = SimConfig(seed=seed, days=days, orders_per_day=max(1, orders // days), **extra)
    return write_scenario(path, config).records


def run_settings(base: Settings, tag: str, **engine: Any) -> Settings:
    run_id = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_prefix": f"{run_id}."}),
            "engine": base.engine.model_copy(
                update={"app_id": run_id, "standby_replicas": 0, **engine}
            ),
        }
    )


def rss_mb(pid: int) -> float:
    """Resident set of a process and its children (the worker is `python -m chainwatch`)."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def wait_lag_zero(settings: Settings, worker: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Seconds until the group has committed everything twice in a row."""
    started = time.monotonic()
    streak = 0
    last = 0.0
    while time.monotonic() - started < timeout_s:
        if worker.poll() is not None:
            raise SystemExit(f"worker exited with code {worker.returncode}")
        lag = _lag(settings)
        streak = streak + 1 if lag == 0 else 0
        if streak >= 2:
            return time.monotonic() - started
        if time.monotonic() - last > 10:
            say(f"  ... {lag} records behind")
            last = time.monotonic()
        time.sleep(0.25)
    raise SystemExit(f"the worker did not catch up within {timeout_s:.0f}s")


# --- 1. throughput ----------------------------------------------------------------------


async def raw_consume(settings: Settings, plan: SlaPlan) -> tuple[int, float]:
    """Read every input record from the beginning and decode it; (records, seconds)."""
    names = TopicNames(settings.kafka.topic_prefix)
    logical = {names(t): t for t in INPUT_TOPICS}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(t, p) for t in logical for p in range(settings.kafka.partitions)
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        count = 0
        started = time.perf_counter()
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, messages in batch.items():
                topic = logical[tp.topic]
                for m in messages:
                    with contextlib.suppress(RecordRejected):
                        decode_input(topic, m.value, plan=plan)
                count += len(messages)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


def bench_throughput(
    base: Settings, events: int, partitions: int, tmp: Path, commit_interval_s: float | None
) -> dict[str, Any]:
    scenario = tmp / "throughput.ndjson"
    say(f"[1] simulating about {events} records ...")
    records = make_scenario(scenario, events)
    run = ReplayRun(base, scenario, partitions=partitions, progress=no_progress)
    if commit_interval_s is not None:
        engine = run.settings.engine.model_copy(update={"commit_interval_s": commit_interval_s})
        run.settings = run.settings.model_copy(update={"engine": engine})
    try:
        say(f"[1] publishing {records} records to {partitions} partitions (not timed) ...")
        run.publish()
        plan = load_plan(run.settings.engine.plan)
        say("[1] raw aiokafka consume + decode_input ...")
        raw_count, raw_s = asyncio.run(raw_consume(run.settings, plan))
        say("[1] one engine worker, from start to idle ...")
        started = time.monotonic()
        (worker,) = run.start_workers(1)
        first_commit: float | None = None
        while first_commit is None and worker.poll() is None:
            lag = run.lag()
            if lag is not None and lag < run.published:
                first_commit = time.monotonic() - started
            else:
                time.sleep(0.1)
        peak_rss = 0.0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_rss
            while not done.wait(1.0):
                peak_rss = max(peak_rss, rss_mb(worker.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        total_s = first_commit or 0.0
        total_s += wait_lag_zero(run.settings, worker, 7200)
        done.set()
        processed = run.published
        stop_workers(run.workers)
        say("[1] a bare faust agent over the same records (table write + send each) ...")
        bare_first, bare_s = bare_faust(run.settings, processed, tmp)
        return {
            "bare_s": bare_s,
            "bare_rate": processed / bare_s,
            "bare_first_s": bare_first,
            "records": processed,
            "engine_s": total_s,
            "engine_rate": processed / total_s,
            "startup_s": first_commit,
            "steady_rate": processed / max(1e-9, total_s - (first_commit or 0.0)),
            "raw_records": raw_count,
            "raw_s": raw_s,
            "raw_rate": raw_count / raw_s,
            "peak_rss_mb": peak_rss,
        }
    finally:
        run.close()


def bare_faust(settings: Settings, records: int, tmp: Path) -> tuple[float, float]:
    """(start-up to first record, start to the commit after the last) of bench/bare_faust.py."""
    app_id = f"{settings.engine.app_id}-bare"
    done = subprocess.run(
        [
            sys.executable, str(Path(__file__).with_name("bare_faust.py")),
            "--app-id", app_id, "--bootstrap", settings.kafka.bootstrap,
            "--prefix", settings.kafka.topic_prefix,
            "--partitions", str(settings.kafka.partitions), "--records", str(records),
            "--data-dir", str(tmp / "bare"),
            "--commit-interval", str(settings.engine.commit_interval_s),
        ],
        capture_output=True, timeout=3600, check=False,
    )  # fmt: skip
    # faust's worker routes stdout through its logger: the figures may land in stderr
    for line in (done.stdout + done.stderr).decode(errors="replace").splitlines():
        at = line.find('{"first_s"')
        if at >= 0:
            figures = orjson.loads(line[at:].strip())
            return figures["first_s"], figures["done_s"]
    raise SystemExit(f"bare faust agent failed: {done.stderr.decode()[-2000:]}")


# --- 2. live deadline latency -----------------------------------------------------------


def _created(order_id: str, placed_at: datetime) -> bytes:
    return orjson.dumps(
        {
            "op": "created", "order_id": order_id, "customer_id": "C-BENCH",
            "product": "merino-crewneck", "quantity": 10, "placed_at": format_utc(placed_at),
            "due_at": format_utc(placed_at + timedelta(days=20)),
        }
    )  # fmt: skip


async def _background(
    settings: Settings, lines: list[bytes], rate: float, stop: asyncio.Event
) -> tuple[int, float]:
    """Publish scenario records at `rate`/s (in 50 ms slices) until `stop`."""
    names = TopicNames(settings.kafka.topic_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        decoded = []
        for line in lines:
            try:
                replay = decode_replay_line(line)
            except RecordRejected:
                continue
            decoded.append((names(replay.topic), replay.key_bytes(), replay.value_bytes()))
        i = 0
        while not stop.is_set() and i < len(decoded):
            due = int((time.monotonic() - started) * rate)
            while sent < due and i < len(decoded):
                topic, key, value = decoded[i]
                await producer.send(topic, key=key, value=value)
                i += 1
                sent += 1
            await asyncio.sleep(0.05)
        return sent, time.monotonic() - started
    finally:
        await producer.stop()


async def _probe_and_collect(
    settings: Settings, probes: int, lead_s: float, every_s: float
) -> list[float]:
    names = TopicNames(settings.kafka.topic_prefix)
    plan = load_plan(settings.engine.plan)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        names(ALERTS), bootstrap_servers=settings.kafka.bootstrap, auto_offset_reset="latest"
    )
    await producer.start()
    await consumer.start()
    due_at: dict[str, datetime] = {}
    latencies: list[float] = []
    try:
        while not consumer.assignment():  # noqa: ASYNC110 (aiokafka has no event for it)
            await asyncio.sleep(0.05)
        await consumer.seek_to_end()
        run = uuid.uuid4().hex[:6]

        async def send_probes() -> None:
            for n in range(probes):
                order_id = f"PROBE-{run}-{n}"
                deadline = datetime.now(UTC) + timedelta(seconds=lead_s)
                due_at[order_id] = deadline + plan.grace
                placed_at = deadline - plan.start_within
                await producer.send(
                    names(ORDERS), key=order_id.encode(), value=_created(order_id, placed_at)
                )
                await asyncio.sleep(every_s)

        sender = asyncio.create_task(send_probes())
        give_up = time.monotonic() + probes * every_s + lead_s + 60
        seen: set[str] = set()
        while len(seen) < probes and time.monotonic() < give_up:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    alert = orjson.loads(m.value)
                    order_id = alert.get("order_id")
                    if alert["type"] != "start_overdue" or order_id not in due_at:
                        continue
                    if order_id in seen:
                        continue
                    seen.add(order_id)
                    due_ms = due_at[order_id].timestamp() * 1000
                    latencies.append((m.timestamp - due_ms) / 1000)
        await sender
        return latencies
    finally:
        await consumer.stop()
        await producer.stop()


def bench_latency(
    base: Settings, rate: float, seconds: float, lead_s: float, tmp: Path
) -> dict[str, Any]:
    settings = run_settings(base, "live", clock="live")
    scenario = tmp / "background.ndjson"
    # Recent times, so the engine treats background orders like live ones.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    say(f"[2] simulating {int(rate * (seconds + lead_s + 30))} background records ...")
    make_scenario(scenario, int(rate * (seconds + lead_s + 30)), start=start, seed=11)
    lines = [line for line in scenario.read_bytes().splitlines() if line.strip()]
    prepare_topics(settings)
    (worker,) = start_workers(settings, 1)
    try:
        say("[2] waiting for the live worker ...")
        warm = asyncio.run(_probe_and_collect(settings, 1, 1.0, 0.0))
        if not warm:
            raise SystemExit("the live worker never answered the warm-up probe")
        probes = max(1, int(seconds / 0.1))
        say(f"[2] {probes} probes over {seconds:.0f}s under {rate:.0f} records/s ...")

        async def both() -> tuple[list[float], tuple[int, float], float]:
            stop = asyncio.Event()
            background = asyncio.create_task(_background(settings, lines, rate, stop))
            await asyncio.sleep(2)  # let the background reach its rate first
            latencies = await _probe_and_collect(settings, probes, lead_s, 0.1)
            stop.set()
            sent = await background
            return latencies, sent, rss_mb(worker.pid)

        latencies, (sent, sent_s), rss = asyncio.run(both())
        lag = _lag(settings)
        latencies.sort()
        return {
            "probes": probes,
            "answered": len(latencies),
            "p50": statistics.median(latencies) if latencies else None,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            if latencies
            else None,
            "max": latencies[-1] if latencies else None,
            "background_rate": sent / sent_s,
            "lag_after": lag,
            "rss_mb": rss,
        }
    finally:
        stop_workers([worker])
        delete_run_topics(settings)


# --- 3. RSS with open orders ------------------------------------------------------------


async def _publish_orders(settings: Settings, first: int, count: int) -> None:
    names = TopicNames(settings.kafka.topic_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    placed = datetime.now(UTC).replace(microsecond=0)
    try:
        pending = []
        for n in range(first, first + count):
            order_id = f"PO-{n:08d}"
            pending.append(
                await producer.send(
                    names(ORDERS), key=order_id.encode(), value=_created(order_id, placed)
                )
            )
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def bench_rss(base: Settings, orders: int, target: int) -> dict[str, Any]:
    settings = run_settings(base, "rss", clock="live")
    prepare_topics(settings)
    (worker,) = start_workers(settings, 1)
    points: list[tuple[int, float, float]] = []
    try:
        idle_rss = 0.0
        loaded = 0
        for step in (orders // 2, orders - orders // 2):
            say(f"[3] publishing {step} open orders (total {loaded + step}) ...")
            asyncio.run(_publish_orders(settings, loaded, step))
            loaded += step
            took = wait_lag_zero(settings, worker, 7200)
            if not idle_rss:
                idle_rss = rss_mb(worker.pid)
            points.append((loaded, rss_mb(worker.pid), took))
        (n1, r1, _t1), (n2, r2, t2) = points
        per_order_kb = (r2 - r1) * 1024 / max(1, n2 - n1)
        return {
            "points": points,
            "per_order_kb": per_order_kb,
            "extrapolated_mb": r2 + (target - n2) * per_order_kb / 1024,
            "target": target,
            "rate": (n2 - n1) / t2 if t2 else None,
        }
    finally:
        stop_workers([worker])
        delete_run_topics(settings)


# --- report -------------------------------------------------------------------------------


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in subprocess.run(
                ["lscpu"], capture_output=True, text=True
            ).stdout.splitlines()
            if line.startswith("Model name")
        ),
        "?",
    )
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"nproc={os.cpu_count()} cpu={model} loadavg={load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000, help="replay size (records)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--commit-interval", type=float, default=None,
        help="replay worker commit interval (s); default: what `chainwatch replay` uses (0.2)",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=5000, help="background records/s")
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--lead-seconds", type=float, default=3, help="probe deadline lead")
    parser.add_argument("--open-orders", type=int, default=1_000_000)
    parser.add_argument("--rss-target", type=int, default=1_000_000)
    parser.add_argument("--skip", action="append", default=[], choices=["1", "2", "3"])
    args = parser.parse_args()
    base = Settings()
    base = base.model_copy(
        update={"kafka": base.kafka.model_copy(update={"partitions": args.partitions})}
    )
    say(machine())
    results: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
        ("1", lambda tmp: bench_throughput(
            base, args.events, args.partitions, tmp, args.commit_interval)),
        ("2", lambda tmp: bench_latency(
            base, args.rate, args.latency_seconds, args.lead_seconds, tmp)),
        ("3", lambda _tmp: bench_rss(base, args.open_orders, args.rss_target)),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for key, step in steps:
            if key not in args.skip:
                results[key] = step(Path(tmp))
    print(f"machine: {machine()}")
    print(f"{'measure':44} {'value':>14}  goal")
    if "1" in results:
        r = results["1"]
        print(f"replay records, 1 worker, {args.partitions} partitions  {r['records']:>14}")
        print(f"{'engine events/s (worker start -> idle)':44} {r['engine_rate']:>14.0f}  >= 20000")
        print(f"{'  of which start-up to first commit (s)':44} {r['startup_s'] or 0:>14.1f}")
        print(f"{'  events/s after first commit':44} {r['steady_rate']:>14.0f}")
        print(f"{'raw consume + decode_input events/s':44} {r['raw_rate']:>14.0f}")
        ratio = 100 * r["engine_rate"] / r["raw_rate"]
        print(f"{'engine / raw':44} {ratio:>13.1f}%  >= 25 %")
        print(f"{'bare faust agent events/s (start -> commit)':44} {r['bare_rate']:>14.0f}")
        print(f"{'  of which start-up to first record (s)':44} {r['bare_first_s']:>14.1f}")
        bare = r["engine_rate"] / r["bare_rate"]
        print(f"{'engine / bare faust':44} {bare:>14.2f}  >= 1.0")
        print(f"{'worker peak RSS during replay (MB)':44} {r['peak_rss_mb']:>14.0f}")
    if "2" in results:
        r = results["2"]
        print(
            f"{'background records/s achieved':44} {r['background_rate']:>14.0f}  {args.rate:.0f}"
        )
        print(f"{'probes answered':44} {r['answered']:>10}/{r['probes']:<3}")
        for name in ("p50", "p99", "max"):
            value = r[name]
            shown = "n/a" if value is None else f"{value:.3f}"
            goal = "<= 1 s" if name == "p99" else ""
            print(f"{'deadline -> alert latency ' + name + ' (s)':44} {shown:>14}  {goal}")
        print(f"{'group lag right after the run':44} {r['lag_after']!s:>14}")
    if "3" in results:
        r = results["3"]
        for n, mb, took in r["points"]:
            label = f"RSS with {n} open orders (MB)"
            print(f"{label:44} {mb:>14.0f}  (loaded in {took:.0f}s)")
        print(f"{'RSS per open order (KB, slope)':44} {r['per_order_kb']:>14.2f}")
        loaded = r["points"][-1][0]
        label = f"RSS at {r['target']} orders (MB)" + (
            " EXTRAPOLATED" if loaded < r["target"] else ""
        )
        print(f"{label:44} {r['extrapolated_mb']:>14.0f}  < 2048")


if __name__ == "__main__":
    main()
