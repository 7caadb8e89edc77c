"""Fault tests with figures (issue 10, section 3): the real processes under faults.

Every scenario runs the real processes - the project's Kafka broker
(`chainwatch kafka start/stop`), `chainwatch gateway`, `chainwatch worker`,
`chainwatch sink` (embedded ClickHouse) and `chainwatch notify` - on the
traffic of `chainwatch simulate --gateway` (seeded, so every run posts the
same records), injects one fault while the traffic flows, waits until the
pipeline is idle and compares the final ClickHouse state (`FINAL` for the
latest-state tables) with a reference run of the same records through a clean
pipeline. A `chainwatch replay` of the same records is compared with the
reference's alerts once (the engine's own determinism check).

    .venv/bin/python bench/faults.py                       # every scenario
    .venv/bin/python bench/faults.py --only broker,kill9   # some of them
    .venv/bin/python bench/faults.py --webhook-down-s 60   # the receiver down 1 min, not 5

Scenarios: `broker` (stopped and restarted mid-stream), `kill9` (each process
in turn: gateway, worker, sink, notifier, broker), `lock` (the embedded store
held by another process for `--lock-s`), `webhook` (the receiver fails 50 % of
requests and is down for `--webhook-down-s`), `hostile` (bad inputs to the
gateway, NDJSON and array forms). Results: a table on stdout; the numbers go
to docs/reliability.md.

Every wait is on a condition with a deadline; a fault that lasts a while (the
broker down, the store locked, the receiver down) is held for its stated
duration and then lifted. Every process is stopped at the end, also on Ctrl-C
or a failure. Data and logs: `.chainwatch/faults/`. Every port follows
`--kafka-port` (default 39092): the broker's controller on +1, the workers'
ops port on +2, and the gateways, webhook receivers and the sink's query
endpoint on the first free ports from +10 to +99.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from schemas.topics import ALERTS, DEAD_LETTER, INPUT_TOPICS, OUTPUT_TOPICS
from sinks.http_serving import serving_thread

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SCENARIOS = ("broker", "kill9", "lock", "webhook", "hostile")

#: Columns that differ between two runs of the same records by construction: where and
#: when the row was stored, and `as_of` (the partition's event clock when the snapshot
#: was published, which moves with the other orders of the partition).
RUN_COLUMNS = {"kafka_topic", "kafka_partition", "kafka_offset", "ingested_at", "version", "as_of"}
#: The latest-state tables and their keys (compared with FINAL).
FINAL_TABLES = {
    "customers": ("customer_id",),
    "orders": ("order_id",),
    "order_state": ("order_id",),
    "stage_visits": ("order_id", "stage", "visit"),
    "alerts": ("alert_id",),
}
#: Append-only tables: every input record once (compared as multisets of rows).
RAW_TABLES = ("scans", "order_events", "unit_status", "dead_letters")
#: Tables that hold the input records themselves (the rest is the engine's output).
INPUT_TABLES = frozenset(("scans", "order_events", "unit_status", "dead_letters", "customers"))
DEAD_LETTER_IDENTITY = ("reason_code", "source_kind", "value_b64")


def log(msg: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A scenario could not run (a deadline passed, a process died); the message says why."""


def wait_for(what: str, check: Callable[[], Any], *, timeout_s: float, every_s: float = 1.0) -> Any:
    """Poll `check()` until it returns a truthy value; `BenchError` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except BenchError:
            raise
        except Exception as exc:  # a probe failing is "not yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = (
                f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            )
            raise BenchError(f"{what}: not reached within {timeout_s:.0f}s{detail}")
        time.sleep(every_s)


# --- the broker -------------------------------------------------------------------------


@dataclass
class Broker:
    """The project's local broker on the bench's own ports and data dir."""

    data_dir: Path
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHAINWATCH_")}
        env.update(
            CHAINWATCH_DATA_DIR=str(self.data_dir),
            CHAINWATCH_KAFKA__LOCAL_PORT=str(self.port),
            CHAINWATCH_KAFKA__LOCAL_CONTROLLER_PORT=str(self.controller_port),
            CHAINWATCH_KAFKA__LOCAL_HEAP="512m",
        )
        return env

    def _cli(self, *args: str, timeout_s: float) -> str:
        try:
            done = subprocess.run(
                [PYTHON, "-m", "chainwatch", "kafka", *args],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=ROOT,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"chainwatch kafka {' '.join(args)}: no answer in {timeout_s:.0f}s"
            ) from None
        if done.returncode != 0:
            raise BenchError(f"chainwatch kafka {' '.join(args)}: {done.stderr.strip()[-300:]}")
        return done.stdout.strip()

    def start(self, attempts: int = 3) -> None:
        """`chainwatch kafka start`; on a loaded machine the first start may miss its 90 s."""
        for attempt in range(1, attempts + 1):
            try:
                self._cli("start", timeout_s=240)
                return
            except BenchError as exc:
                if "did not answer" in str(exc) and self._ready_later(timeout_s=300):
                    log(f"broker start {attempt}: ready after the CLI's 90 s deadline")
                    return
                if attempt == attempts:
                    raise
                log(f"broker start {attempt} failed ({exc}); stop and start again")
                with contextlib.suppress(BenchError):
                    self._cli("stop", timeout_s=120)

    def _ready_later(self, timeout_s: float) -> bool:
        """A slow start keeps running past `kafka start`'s deadline: wait on `kafka status`."""

        def ready() -> bool:
            done = subprocess.run(
                [PYTHON, "-m", "chainwatch", "kafka", "status"],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            )
            return done.returncode == 0

        try:
            wait_for("broker ready", ready, timeout_s=timeout_s, every_s=5)
        except BenchError:
            return False
        return True

    def fresh(self) -> None:
        """Start on an empty data dir (earlier bench runs' topics only slow recovery)."""
        with contextlib.suppress(BenchError):
            self._cli("stop", timeout_s=120)
        shutil.rmtree(self.data_dir / "kafka", ignore_errors=True)
        self.start()

    def stop(self) -> None:
        self._cli("stop", timeout_s=120)

    def pid(self) -> int | None:
        path = self.data_dir / "kafka" / "broker.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill9(self) -> None:
        pid = self.pid()
        if pid is None:
            raise BenchError("no broker pid file")
        os.kill(pid, signal.SIGKILL)
        wait_for("broker gone after kill -9", lambda: not _alive(pid), timeout_s=30, every_s=0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is dead too
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Ports:
    """The bench's ports, all next to the broker's (`--kafka-port`), none picked by the OS.

    The controller takes +1, every worker's ops port +2 (one worker runs at a time);
    gateways, webhook receivers and the sink's query endpoint take the first free
    port from +10 on, each its own for the whole bench, up to +99.
    """

    def __init__(self, kafka_port: int) -> None:
        self.kafka = kafka_port
        self.controller = kafka_port + 1
        self.worker_ops = kafka_port + 2
        self._next = kafka_port + 10

    def take(self) -> int:
        import socket

        while self._next < self.kafka + 100:
            port = self._next
            self._next += 1
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:  # taken by someone else: the next one
                    continue
            return port
        raise BenchError(f"no free port left in {self.kafka + 10}-{self.kafka + 99}")


# --- Kafka progress and lag (every call bounded) -----------------------------------------


class KafkaProbe:
    """End offsets and consumer-group lag, each call under a deadline."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def _bounded(self, call: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
        from chainwatch.kafka_admin import bounded

        return bounded(call, timeout_s=timeout_s, what=what)

    def end_offsets(self, topics: list[str]) -> dict[tuple[str, int], int]:
        from kafka import KafkaConsumer, TopicPartition

        from chainwatch.kafka_start import started

        def call() -> dict[tuple[str, int], int]:
            # (asked again and again through a broker outage: a failed start leaves nothing)
            consumer = started(
                KafkaConsumer,
                self.bootstrap,
                start_ms=10000,
                request_timeout_ms=10000,
                isolation_level="read_committed",
            )
            try:
                parts = []
                for topic in topics:
                    for p in consumer.partitions_for_topic(topic) or ():
                        parts.append(TopicPartition(topic, p))
                ends = consumer.end_offsets(parts, timeout_ms=10000) if parts else {}
                return {(tp.topic, tp.partition): int(off) for tp, off in ends.items()}
            finally:
                consumer.close(timeout_ms=5000)

        result: dict[tuple[str, int], int] = self._bounded(call, "end offsets")
        return result

    def group_offsets(self, group: str) -> dict[tuple[str, int], int]:
        from kafka.errors import KafkaError

        from chainwatch.kafka_admin import close_admin, started_admin

        def call() -> dict[tuple[str, int], int]:
            admin = started_admin(self.bootstrap, request_ms=10000)
            try:
                try:
                    offsets = admin.list_group_offsets({group: None}).get(group, {})
                except KafkaError:  # the group is not there yet
                    return {}
                return {
                    (tp.topic, tp.partition): int(meta.offset)
                    for tp, meta in offsets.items()
                    if meta.offset >= 0
                }
            finally:
                close_admin(admin)

        result: dict[tuple[str, int], int] = self._bounded(call, f"offsets of group {group}")
        return result

    def lag(
        self, group: str, topics: list[str], transactional: frozenset[str] = frozenset()
    ) -> int:
        """Records of `topics` not committed by `group` (a partition never committed counts whole).

        A transaction's commit marker takes an offset of its own that no consumer
        commits past: on a topic the gateway writes (`transactional`), one offset
        per partition is not counted.
        """
        ends = self.end_offsets(topics)
        committed = self.group_offsets(group)
        return sum(
            max(0, end - committed.get(tp, 0) - (1 if tp[0] in transactional else 0))
            for tp, end in ends.items()
        )


# --- a webhook receiver that fails on purpose ---------------------------------------------


class FlakyReceiver:
    """Answers 500 to `fail_share` of the deliveries; `down()` closes the port for a while."""

    def __init__(self, port: int, fail_share: float, seed: int = 7) -> None:
        self.port = port
        self.fail_share = fail_share
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.attempts = 0
        self.failed = 0
        self.accepted: list[tuple[str, str, dict[str, Any]]] = []  # (webhook-id, body sha, data)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/ops"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.attempts += 1
                    fail = receiver.rng.random() < receiver.fail_share
                    if fail:
                        receiver.failed += 1
                    else:
                        try:
                            data = json.loads(body).get("data", {})
                        except (ValueError, AttributeError):
                            data = {}
                        receiver.accepted.append(
                            (
                                self.headers.get("webhook-id", ""),
                                hashlib.sha256(body).hexdigest(),
                                data,
                            )
                        )
                self.send_response(500 if fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = serving_thread(self._httpd)
        self._thread.start()

    def down(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


# --- one pipeline run --------------------------------------------------------------------


@dataclass
class Traffic:
    seed: int
    days: int
    orders_per_day: int
    rate: float
    start: str


PROCESS_ARGS = {
    "worker": ["worker"],
    "sink": ["sink"],
    "notify": ["notify"],
}


@dataclass
class Run:
    """One pipeline (own topics, app id, embedded store and gateway port) on the shared broker."""

    name: str
    bench: Bench
    webhook_url: str | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        stamp = datetime.now(UTC).strftime("%H%M%S")
        self.dir = self.bench.work / "runs" / f"{self.name}-{stamp}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.app_id = f"faults-{self.name}-{stamp}"
        self.prefix = f"{self.app_id}."
        self.port = self.bench.ports.take()
        self.gateway_url = f"http://127.0.0.1:{self.port}"
        from streams.ingest.auth import hash_token

        self.token = secrets.token_urlsafe(32)
        self.tokens_file = self.dir / "tokens.yaml"
        self.tokens_file.write_text(
            "tokens:\n  - name: faults-admin\n"
            f"    sha256: {hash_token(self.token)}\n    role: admin\n"
        )
        self.token_file = self.dir / "admin.token"
        self.token_file.touch(mode=0o600)
        self.token_file.write_text(self.token)
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHAINWATCH_")}
        self.env.update(
            CHAINWATCH_DATA_DIR=str(self.dir),
            CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS=self.bench.broker.bootstrap,
            CHAINWATCH_KAFKA__TOPIC_PREFIX=self.prefix,
            CHAINWATCH_ENGINE__APP_ID=self.app_id,
            CHAINWATCH_ENGINE__CLOCK="event",
            CHAINWATCH_ENGINE__METRICS_PORT=str(self.bench.ports.worker_ops),
            CHAINWATCH_CLICKHOUSE__QUERY_PORT=str(self.bench.ports.take()),
            CHAINWATCH_LOG_FORMAT="json",
            CHAINWATCH_GATEWAY__EPCIS_MAPPING=str(
                ROOT / "deploy" / "gateway" / "epcis-mapping.example.yaml"
            ),
            # the receiver runs on this machine's loopback: allowed explicitly
            CHAINWATCH_WEBHOOKS__ALLOWED_HOSTS="127.0.0.1",
            CHAINWATCH_WEBHOOKS__ALLOWED_NETWORKS="127.0.0.1",
            CHAINWATCH_WEBHOOKS__INITIAL_BACKOFF_S="0.5",
            CHAINWATCH_WEBHOOKS__MAX_BACKOFF_S=str(self.bench.args.webhook_max_backoff_s),
            CHAINWATCH_WEBHOOKS__TIMEOUT_S="5",
            CHAINWATCH_FAULTS_WEBHOOK_SECRET=self.webhook_secret,
        )
        if self.webhook_url is not None:
            subs = self.dir / "subscriptions.yaml"
            subs.write_text(
                "endpoints:\n"
                "  - name: faults-receiver\n"
                f"    url: {self.webhook_url}\n"
                "    secret_env: CHAINWATCH_FAULTS_WEBHOOK_SECRET\n"
                "    format: json\n"
            )
            self.env["CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS"] = str(subs)

    # processes

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        logfile = self.dir / f"{name}.log"
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                [PYTHON, "-m", "chainwatch", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start(self, name: str) -> None:
        if name == "gateway":
            proc = self._spawn(
                "gateway",
                [
                    "gateway",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--tokens",
                    str(self.tokens_file),
                ],
            )
            self.wait_gateway(proc)
        elif name == "simulate":
            t = self.bench.traffic
            self._spawn(
                "simulate",
                [
                    "simulate", "--gateway", self.gateway_url, "--token-file", str(self.token_file),
                    "--seed", str(t.seed), "--days", str(t.days),
                    "--orders-per-day", str(t.orders_per_day), "--start", t.start,
                    "--rate", str(t.rate), "--summary",
                ],
            )  # fmt: skip
        else:
            self._spawn(name, PROCESS_ARGS[name])

    def wait_gateway(self, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
        def ready() -> bool:  # it serves at once, and takes posts once its topics are prepared
            if proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: the gateway exited at start-up (see {self.dir}/gateway.log)"
                )
            return httpx.get(f"{self.gateway_url}/readyz", timeout=2).status_code == 200

        wait_for(f"{self.name}: gateway ready", ready, timeout_s=timeout_s, every_s=0.3)

    def prepare_topics(self, attempts: int = 4) -> None:
        """Create the run's topics up front (a worker exits when its internal topics are slow)."""
        code = (
            "from chainwatch.kafka_admin import ensure_named_topics\n"
            "from chainwatch.runners import prepare_topics\n"
            "from chainwatch.settings import Settings\n"
            "from streams.engine.messages import INTERNAL_TOPICS\n"
            "s = Settings()\n"
            "prepare_topics(s)\n"
            "names = [f'{s.engine.app_id}-{n}' for n in INTERNAL_TOPICS]\n"
            "ensure_named_topics(s.kafka.bootstrap, names,"
            " request_timeout_s=s.kafka.request_timeout_s, partitions=s.kafka.partitions,"
            " replication_factor=s.kafka.replication_factor)\n"
        )
        for attempt in range(1, attempts + 1):
            done = subprocess.run(
                [PYTHON, "-c", code],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=180,
                cwd=ROOT,
            )
            if done.returncode == 0:
                return
            log(f"{self.name}: creating topics, attempt {attempt}: {done.stderr.strip()[-200:]}")
        raise BenchError(f"{self.name}: topics could not be created")

    def start_pipeline(self) -> None:
        self.prepare_topics()
        for name in ("worker", "sink", "gateway"):
            self.start(name)
        if self.webhook_url is not None:
            self.start("notify")

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        wait_for(
            f"{name} gone after kill -9", lambda: proc.poll() is not None, timeout_s=30, every_s=0.1
        )

    def stop(self, name: str, timeout_s: float = 60) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.notes.append(f"{name} ignored SIGTERM for {timeout_s:.0f}s: killed")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in ("simulate", "gateway", "notify", "worker", "sink"):
            try:
                self.stop(name)
            except Exception as exc:  # keep stopping the others
                log(f"{self.name}: stopping {name}: {exc}")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if name != "simulate" and proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: {name} exited with {proc.returncode} (see {self.dir}/{name}.log)"
                )

    # progress and idleness

    def input_topics(self) -> list[str]:
        return [self.topic(t) for t in INPUT_TOPICS]

    def transactional(self) -> frozenset[str]:
        """Topics the gateway writes in transactions (commit markers take offsets)."""
        return frozenset([*self.input_topics(), self.topic(DEAD_LETTER)])

    def output_topics(self) -> list[str]:
        return [self.topic(t) for t in OUTPUT_TOPICS]

    def input_records(self) -> int:
        return sum(self.bench.probe.end_offsets(self.input_topics()).values())

    def wait_inputs(self, share: float, timeout_s: float = 900) -> None:
        """Until the input topics hold `share` of the traffic (end offsets; markers count too)."""
        target = int(share * self.bench.expected_records)

        def reached() -> bool:
            self.check_alive()
            return self.input_records() >= target

        wait_for(
            f"{self.name}: {share:.0%} of the traffic in Kafka",
            reached,
            timeout_s=timeout_s,
            every_s=1,
        )

    def wait_simulator(self, timeout_s: float = 1800) -> None:
        proc = self.procs["simulate"]

        def done() -> bool:
            self.check_alive()
            return proc.poll() is not None

        wait_for(f"{self.name}: simulator finished", done, timeout_s=timeout_s, every_s=1)
        tail = (self.dir / "simulate.log").read_text(errors="replace").strip().splitlines()[-12:]
        summary = [line for line in tail if "gateway accepted" in line or "records in" in line]
        self.notes.extend(s.strip() for s in summary)
        if proc.returncode != 0:
            self.notes.append(f"simulator exited {proc.returncode}: {tail[-1] if tail else ''}")

    def client_gave_up(self) -> dict[str, int]:
        """Items the simulator dropped after the gateway kept answering (503) past its retries.

        The gateway committed none of them and said so; they are the client's loss,
        not the pipeline's, and are shown apart from what the pipeline lost.
        """
        table_of = {
            "/v1/scans": "scans",
            "/v1/unit-status": "unit_status",
            "/v1/orders": "order_events",
            "/v1/customers": "customers",
        }
        gave_up: Counter[str] = Counter()
        for line in (self.dir / "simulate.log").read_text(errors="replace").splitlines():
            if '"simulate.gateway_error"' not in line:
                continue
            with contextlib.suppress(ValueError, KeyError):
                entry = json.loads(line)
                gave_up[table_of[entry["path"]]] += int(entry["items"])
        return dict(gave_up)

    def groups(self) -> dict[str, list[str]]:
        internal = self.bench.probe_topics(self.app_id)
        groups = {
            self.app_id: [*self.input_topics(), *internal],
            f"{self.app_id}-clickhouse-sink": [*self.input_topics(), *self.output_topics()],
        }
        if self.webhook_url is not None:
            # one consumer group per endpoint (sinks/webhooks/dispatcher.py)
            groups[f"{self.app_id}-notify.faults-receiver"] = [self.topic(ALERTS)]
        return groups

    def wait_idle(self, timeout_s: float = 1800) -> float:
        """Until every group has committed every record, twice in a row with nothing new."""
        began = time.monotonic()
        previous: list[Any] = [None]

        def idle() -> bool:
            self.check_alive()
            groups = self.groups()
            ends = self.bench.probe.end_offsets(sorted({t for ts in groups.values() for t in ts}))
            lags = {
                g: self.bench.probe.lag(g, ts, self.transactional()) for g, ts in groups.items()
            }
            commits = {g: sorted(self.bench.probe.group_offsets(g).items()) for g in groups}
            snapshot = (sorted(ends.items()), lags, commits)
            settled = all(v == 0 for v in lags.values()) and previous[0] == snapshot
            previous[0] = snapshot
            return settled

        # settled = every lag 0 and nothing moved between two polls 3 s apart
        wait_for(f"{self.name}: pipeline idle", idle, timeout_s=timeout_s, every_s=3)
        return time.monotonic() - began

    def sql(self, query: str, timeout_s: float = 120) -> list[dict[str, Any]]:
        """A read through `chainwatch sql` (the sink's query endpoint while it runs)."""
        done = subprocess.run(
            [PYTHON, "-m", "chainwatch", "sql", query, "--format", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise BenchError(f"chainwatch sql: {done.stderr.strip()[-300:]}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def undelivered(self, receiver: FlakyReceiver) -> int:
        """Alerts in ClickHouse whose final status the receiver has not accepted yet."""
        self.check_alive()
        rows = self.sql("SELECT alert_id, status FROM alerts FINAL")
        with receiver.lock:
            seen = {(d.get("alert_id"), str(d.get("status"))) for _, _, d in receiver.accepted}
        return sum(1 for r in rows if (r["alert_id"], r["status"]) not in seen)

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every compared table (FINAL where latest-state), read once the processes stopped."""
        out = self.dir / "state.json"
        done = subprocess.run(
            [PYTHON, str(Path(__file__).resolve()), "_dump", str(out)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise BenchError(f"{self.name}: dump failed: {done.stderr.strip()[-500:]}")
        state: dict[str, list[dict[str, Any]]] = json.loads(out.read_text())
        return state


def dump_main(out: Path) -> None:
    """`faults.py _dump OUT`: the run's tables as JSON (runs in the run's environment)."""
    from chainwatch.settings import Settings
    from sinks.clickhouse.connection import open_client

    client = open_client(Settings())
    state: dict[str, list[dict[str, Any]]] = {}
    try:
        for table in (*RAW_TABLES, *FINAL_TABLES, "webhook_deliveries"):
            final = " FINAL" if table in FINAL_TABLES else ""
            result = client.query(f"SELECT * FROM {table}{final}")  # noqa: S608 - table list
            state[table] = [
                dict(zip(result.column_names, row, strict=True)) for row in result.result_rows
            ]
    finally:
        client.close()
    out.write_text(json.dumps(state, default=str))


# --- comparing two final states ----------------------------------------------------------


@dataclass
class TableDiff:
    table: str
    reference: int
    got: int
    lost: int
    duplicated: int
    differ: int = 0
    example: str = ""
    client_gave_up: int = 0
    """Of `lost`: items the gateway refused with 503 and the client then dropped."""


def _identity(table: str, row: dict[str, Any]) -> str:
    if table == "dead_letters":
        return json.dumps([row.get(c) for c in DEAD_LETTER_IDENTITY], default=str)
    return json.dumps({k: v for k, v in sorted(row.items()) if k not in RUN_COLUMNS}, default=str)


def compare(
    ref: dict[str, list[dict[str, Any]]],
    got: dict[str, list[dict[str, Any]]],
    gave_up: dict[str, int] | None = None,
) -> list[TableDiff]:
    """Per table: lost / duplicated (extra) / differing rows of `got` against `ref`."""
    gave_up = gave_up or {}
    diffs: list[TableDiff] = []
    for table in RAW_TABLES:
        want = Counter(_identity(table, r) for r in ref[table])
        have = Counter(_identity(table, r) for r in got[table])
        lost = sum((want - have).values())
        dup = sum((have - want).values())
        example = ""
        if lost or dup:
            sample = next(iter((want - have) or (have - want)))
            example = ("missing " if lost else "extra ") + sample[:200]
        diffs.append(
            TableDiff(
                table, len(ref[table]), len(got[table]), lost, dup, 0, example,
                min(lost, gave_up.get(table, 0)),
            )
        )  # fmt: skip
    for table, key in FINAL_TABLES.items():
        # an alert that ends retracted never was (RULES.md): the same as no alert at all
        want_rows = {
            tuple(r[k] for k in key): r for r in ref[table] if r.get("status") != "retracted"
        }
        have_rows = {
            tuple(r[k] for k in key): r for r in got[table] if r.get("status") != "retracted"
        }
        lost_keys = want_rows.keys() - have_rows.keys()
        extra_keys = have_rows.keys() - want_rows.keys()
        differ = []
        for k in want_rows.keys() & have_rows.keys():
            a, b = want_rows[k], have_rows[k]
            cols = [c for c in a if c not in RUN_COLUMNS and a.get(c) != b.get(c)]
            if cols:
                differ.append((k, cols))
        example = ""
        if lost_keys:
            example = f"missing {sorted(lost_keys)[0]}"
        elif extra_keys:
            example = f"extra {sorted(extra_keys)[0]}"
        elif differ:
            k, cols = differ[0]
            example = f"{k}: {', '.join(cols)} ({want_rows[k][cols[0]]} -> {have_rows[k][cols[0]]})"
        diffs.append(
            TableDiff(
                table,
                len(want_rows),
                len(have_rows),
                len(lost_keys),
                len(extra_keys),
                len(differ),
                example,
                min(len(lost_keys), gave_up.get(table, 0)) if table == "customers" else 0,
            )
        )
    return diffs


# --- the bench ---------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    fault: str
    diffs: list[TableDiff] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def passed(self) -> bool:
        if self.error:
            return False
        if self.scenario == "hostile":
            f = self.figures
            return bool(
                f["5xx"] == 0
                and f["no_answer"] == 0
                and f["gateway_alive_at_end"]
                and f["consistent_between_forms"] == f["cases"]
                and not f["not_as_expected"]
            )
        if self.figures.get("alerts_missing"):
            return False
        return self.lost == self.duplicated == 0 and (
            self.client_gave_up > 0 or self.derived_off == 0
        )

    @property
    def lost(self) -> int:
        """Lost by the pipeline: not counting what the client gave up on after 503s."""
        return sum(d.lost - d.client_gave_up for d in self.diffs if d.table in INPUT_TABLES)

    @property
    def client_gave_up(self) -> int:
        return sum(d.client_gave_up for d in self.diffs)

    @property
    def derived_off(self) -> int:
        """Rows of the engine's tables missing, extra or different."""
        return sum(
            d.lost + d.duplicated + d.differ for d in self.diffs if d.table not in INPUT_TABLES
        )

    @property
    def duplicated(self) -> int:
        return sum(d.duplicated for d in self.diffs if d.table in INPUT_TABLES)

    @property
    def differ(self) -> int:
        return sum(d.differ for d in self.diffs)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = ROOT / ".chainwatch" / "faults"
        self.work.mkdir(parents=True, exist_ok=True)
        self.ports = Ports(args.kafka_port)
        self.broker = Broker(self.work / "broker", self.ports.kafka, self.ports.controller)
        self.probe = KafkaProbe(self.broker.bootstrap)
        start = (datetime.now(UTC) - timedelta(days=args.days + 25)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        self.traffic = Traffic(
            seed=args.seed,
            days=args.days,
            orders_per_day=args.orders_per_day,
            rate=args.rate,
            start=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self.runs: list[Run] = []
        self.expected_records = 0
        self.scenario_file = self.work / "input.ndjson"
        self._reference: dict[str, list[dict[str, Any]]] | None = None

    def probe_topics(self, app_id: str) -> list[str]:
        from streams.engine.messages import INTERNAL_TOPICS

        return [f"{app_id}-{name}" for name in INTERNAL_TOPICS]

    def new_run(self, name: str, webhook_url: str | None = None) -> Run:
        run = Run(name, self, webhook_url)
        self.runs.append(run)
        return run

    def stop_everything(self) -> None:
        for run in self.runs:
            run.stop_all()
        with contextlib.suppress(Exception):
            self.broker.stop()

    # the input, once

    def write_input(self) -> None:
        t = self.traffic
        done = subprocess.run(
            [
                PYTHON, "-m", "chainwatch", "simulate", "--out", str(self.scenario_file),
                "--seed", str(t.seed), "--days", str(t.days),
                "--orders-per-day", str(t.orders_per_day), "--start", t.start,
            ],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"simulate --out: {done.stderr.strip()[-300:]}")
        self.expected_records = sum(1 for _ in self.scenario_file.open())
        log(f"input: {self.expected_records} records ({self.scenario_file})")

    # a whole run with an optional fault in the middle

    def pipeline(
        self,
        name: str,
        fault: Callable[[Run], None] | None = None,
        receiver: FlakyReceiver | None = None,
    ) -> tuple[Run, dict[str, list[dict[str, Any]]]]:
        """Start the processes, post the traffic, inject `fault`, wait until idle, dump the store.

        With a `receiver`, the notifier runs too and the run also waits until the
        final status of every alert in ClickHouse has reached the receiver.
        """
        run = self.new_run(name, receiver.url if receiver is not None else None)
        began = time.monotonic()
        try:
            run.start_pipeline()
            run.start("simulate")
            if fault is not None:
                fault(run)
            run.wait_simulator()
            idle_s = run.wait_idle()
            run.notes.append(f"idle {idle_s:.0f}s after the simulator finished")
            if receiver is not None:
                t0 = time.monotonic()
                wait_for(
                    f"{name}: every alert's final status delivered",
                    lambda: run.undelivered(receiver) == 0,
                    timeout_s=900,
                    every_s=5,
                )
                run.notes.append(
                    f"every final status delivered {time.monotonic() - t0:.0f}s after idle"
                )
        finally:
            run.stop_all()
        state = run.dump()
        run.notes.append(f"run took {time.monotonic() - began:.0f}s")
        return run, state

    def reference(self) -> dict[str, list[dict[str, Any]]]:
        """The clean run's state, kept per code version and traffic (`--fresh-reference`: redo)."""
        if self._reference is None:
            head = subprocess.run(  # the last commit that changed the product, not the bench
                ["git", "log", "-1", "--format=%h", "--", ".", ":!bench", ":!docs"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=30,
            ).stdout.strip()
            t = self.traffic
            cache = self.work / (
                f"reference-{head}-s{t.seed}-d{t.days}-o{t.orders_per_day}-{t.start[:10]}.json"
            )
            if cache.exists() and not self.args.fresh_reference:
                log(f"reference: {cache.name} (a clean run of the same records and code)")
                self._reference = json.loads(cache.read_text())
                return self._reference
            log("reference: the same records through a clean pipeline")
            run, state = self.pipeline("reference")
            self._reference = state
            cache.write_text(json.dumps(state, default=str))
            counts = ", ".join(f"{t} {len(state[t])}" for t in (*RAW_TABLES, *FINAL_TABLES))
            log(f"reference: {counts}; {'; '.join(run.notes)}")
        return self._reference

    def faulted(self, scenario: str, fault_text: str, fault: Callable[[Run], None]) -> Result:
        result = Result(scenario, fault_text)
        ref = self.reference()
        run, state = self.pipeline(scenario, fault)
        result.diffs = compare(ref, state, run.client_gave_up())
        result.notes = run.notes
        return result


# --- the scenarios -------------------------------------------------------------------------


def scenario_broker(bench: Bench) -> Result:
    figures: dict[str, Any] = {}

    def fault(run: Run) -> None:
        run.wait_inputs(0.3)
        t0 = time.monotonic()
        bench.broker.stop()
        figures["stopped_after_s"] = round(time.monotonic() - t0, 1)
        hold = float(bench.args.broker_down_s)
        log(f"broker: stopped, down for {hold:.0f}s")

        def held() -> bool:
            return time.monotonic() - t0 >= hold

        wait_for("broker outage held", held, timeout_s=hold + 5, every_s=0.5)
        t1 = time.monotonic()
        bench.broker.start()
        figures["restart_s"] = round(time.monotonic() - t1, 1)
        run.notes.append(
            f"broker down {time.monotonic() - t0:.0f}s (stop {figures['stopped_after_s']}s, "
            f"start {figures['restart_s']}s)"
        )

    result = bench.faulted("broker", "`chainwatch kafka stop`, start again after the hold", fault)
    result.figures = figures
    return result


def scenario_kill9(bench: Bench) -> Result:
    order = [name.strip() for name in bench.args.kill9.split(",") if name.strip()]

    def fault(run: Run) -> None:
        for i, name in enumerate(order):
            run.wait_inputs(0.12 + 0.14 * i)
            t0 = time.monotonic()
            if name == "broker":
                bench.broker.kill9()
                bench.broker.start()
            else:
                run.kill9(name)
                run.start(name)
            run.notes.append(
                f"kill -9 {name} at {0.12 + 0.14 * i:.0%}, back in {time.monotonic() - t0:.0f}s"
            )
            log(run.notes[-1])

    receiver = FlakyReceiver(bench.ports.take(), 0.0)
    receiver.up()
    try:
        result = Result("kill9", f"kill -9 {', '.join(order)} in turn")
        ref = bench.reference()
        run, state = bench.pipeline("kill9", fault, receiver)
        result.diffs = compare(ref, state, run.client_gave_up())
        result.notes = run.notes
        result.figures.update(_webhook_figures(receiver, state))
    finally:
        receiver.down()
    return result


HOLD_STORE = (
    "import sys\n"
    "from chainwatch.settings import Settings\n"
    "from sinks.clickhouse.connection import open_client\n"
    "client = open_client(Settings())\n"
    "print('holding', flush=True)\n"
    "sys.stdin.read()\n"
    "client.close()\n"
)


def scenario_lock(bench: Bench) -> Result:
    figures: dict[str, Any] = {}

    def fault(run: Run) -> None:
        run.wait_inputs(0.3)
        run.stop("sink")
        holder = subprocess.Popen(
            [PYTHON, "-c", HOLD_STORE],
            env=run.env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out = holder.stdout
            assert out is not None
            line: list[bytes] = []
            reader = threading.Thread(target=lambda: line.append(out.readline()), daemon=True)
            reader.start()
            wait_for(
                "store holder has the lock",
                lambda: bool(line) or holder.poll() is not None,
                timeout_s=120,
                every_s=0.2,
            )
            if not line or b"holding" not in line[0]:
                raise BenchError("the store holder could not take the lock")
            t0 = time.monotonic()
            run.start("sink")  # finds the store locked: must wait, not exit
            hold = float(bench.args.lock_s)
            log(f"lock: store held by pid {holder.pid} for {hold:.0f}s, sink restarted against it")

            def held() -> bool:
                run.check_alive()
                return time.monotonic() - t0 >= hold

            wait_for("store lock held", held, timeout_s=hold + 30, every_s=1)
            sink_group = f"{run.app_id}-clickhouse-sink"
            topics = [*run.input_topics(), *run.output_topics()]
            figures["backlog_at_release"] = bench.probe.lag(sink_group, topics, run.transactional())
        finally:
            if holder.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    holder.stdin.close()
            try:
                holder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(holder.pid, signal.SIGKILL)
                holder.wait(timeout=30)
        t1 = time.monotonic()
        wait_for(
            "sink drained its backlog",
            lambda: bench.probe.lag(sink_group, topics, run.transactional()) == 0,
            timeout_s=900,
            every_s=1,
        )
        figures["drain_s"] = round(time.monotonic() - t1, 1)
        run.notes.append(
            f"store locked {bench.args.lock_s:.0f}s; backlog at release "
            f"{figures['backlog_at_release']} "
            f"records, drained {figures['drain_s']}s after release (sink retry back-off included)"
        )

    result = bench.faulted(
        "lock", f"embedded store locked by another process {bench.args.lock_s:.0f}s", fault
    )
    result.figures = figures
    return result


def _webhook_figures(
    receiver: FlakyReceiver, state: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Every alert's final status delivered; each distinct message once after de-dup by id."""
    with receiver.lock:
        accepted = list(receiver.accepted)
        attempts, failed = receiver.attempts, receiver.failed
    by_id: dict[str, set[str]] = {}
    latest: dict[str, str] = {}
    for wid, sha, _data in accepted:
        by_id.setdefault(wid, set()).add(sha)
    distinct = {sha: wid for wid, sha, _ in accepted}
    ids_per_body: dict[str, set[str]] = {}
    for wid, sha, _ in accepted:
        ids_per_body.setdefault(sha, set()).add(wid)
    statuses: dict[str, set[str]] = {}
    for _, _, data in accepted:
        if "alert_id" in data:
            statuses.setdefault(data["alert_id"], set()).add(str(data.get("status")))
            latest[data["alert_id"]] = str(data.get("status"))
    alerts = {r["alert_id"]: r["status"] for r in state["alerts"]}
    missing = [a for a, s in alerts.items() if s not in statuses.get(a, set())]
    outcomes = Counter(r["outcome"] for r in state["webhook_deliveries"])
    return {
        "alerts_in_clickhouse": len(alerts),
        "alerts_final_status_delivered": len(alerts) - len(missing),
        "alerts_missing": len(missing),
        "attempts": attempts,
        "answered_500": failed,
        "accepted_deliveries": len(accepted),
        "distinct_webhook_ids": len(by_id),
        "distinct_bodies": len(distinct),
        "webhook_id_reused_for_other_body": sum(1 for v in by_id.values() if len(v) > 1),
        "same_body_under_several_ids": sum(1 for v in ids_per_body.values() if len(v) > 1),
        "delivery_log_outcomes": dict(outcomes),
        "missing_example": missing[:3],
    }


def scenario_webhook(bench: Bench) -> Result:
    receiver = FlakyReceiver(bench.ports.take(), 0.5)
    receiver.up()
    figures: dict[str, Any] = {}

    def fault(run: Run) -> None:
        run.wait_inputs(0.3)
        receiver.down()
        t0 = time.monotonic()
        hold = float(bench.args.webhook_down_s)
        log(f"webhook: receiver down for {hold:.0f}s (then failing 50 %)")
        wait_for(
            "receiver outage held",
            lambda: time.monotonic() - t0 >= hold,
            timeout_s=hold + 5,
            every_s=1,
        )
        receiver.up()
        run.notes.append(
            f"receiver down {time.monotonic() - t0:.0f}s at 30 % of the traffic, "
            "50 % of attempts answered 500"
        )

    try:
        result = Result("webhook", f"receiver fails 50 %, down {bench.args.webhook_down_s:.0f}s")
        ref = bench.reference()
        run, state = bench.pipeline("webhook", fault, receiver)
        result.diffs = compare(ref, state, run.client_gave_up())
        result.notes = run.notes
        figures.update(_webhook_figures(receiver, state))
        result.figures = figures
    finally:
        receiver.down()
    return result


# --- hostile inputs ----------------------------------------------------------------------


def _scan(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "order_id": "PO-HOSTILE-1",
        "stage": "dyeing",
        "action": "started",
        "unit_id": "DYE-01",
        "event_time": "2026-11-20T08:00:00Z",
    }


def _scan_text(eid: str, /, **raw: str) -> str:
    """A scan as JSON text with some fields' raw JSON text substituted (NaN, huge ints, ...)."""
    fields = {k: json.dumps(v) for k, v in _scan(eid).items()}
    fields.update(raw)
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def _epcis(events: str) -> str:
    return (
        '{"@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], '
        '"type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-11-20T08:00:00Z", '
        '"epcisBody": {"eventList": ' + events + "}}"
    )


#: What CONTRACT v1.2 asks of each case: "4xx" (invalid on every path), "202", or "any".
def hostile_cases() -> list[tuple[str, str, str, list[str]]]:
    """(name, path, expected, items as JSON texts); posted as NDJSON and as a JSON array."""
    big = str(2**64 + 1)
    cases: list[tuple[str, str, str, list[str]]] = [
        ("lone surrogate (escaped)", "/v1/scans", "4xx", [_scan_text("h-1", event_id='"\\ud800"')]),
        ("lone surrogate in attributes", "/v1/scans", "4xx",
         [_scan_text("h-2", attributes='{"x": "\\udfff"}')]),
        ("NaN quantity", "/v1/scans", "4xx", [_scan_text("h-3", quantity="NaN")]),
        ("Infinity quantity", "/v1/scans", "4xx", [_scan_text("h-4", quantity="Infinity")]),
        ("-Infinity in attributes", "/v1/scans", "4xx",
         [_scan_text("h-5", attributes='{"x": -Infinity}')]),
        ("int 2^64+1 quantity", "/v1/scans", "4xx", [_scan_text("h-6", quantity=big)]),
        ("int 2^64+1 in attributes", "/v1/scans", "4xx",
         [_scan_text("h-7", attributes=f'{{"x": {big}}}')]),
        ("int 2^53+1 in attributes", "/v1/scans", "4xx",
         [_scan_text("h-8", attributes=f'{{"x": {2**53 + 1}}}')]),
        ("int 10^400 in CRM extra", "/v1/customers", "4xx",
         ['{"customer_id": "C-H1", "name": "n", "tier": "gold", "x": 1' + "0" * 400 + "}"]),
        ("duplicate keys", "/v1/scans", "4xx", [_scan_text("h-9")[:-1] + ', "event_id": "h-9b"}']),
        ("valid scan (control)", "/v1/scans", "202", [_scan_text("h-10")]),
    ]  # fmt: skip
    for depth in (250, 600, 1100):
        cases.append(
            (f"nesting {depth} in attributes", "/v1/scans", "4xx",
             [_scan_text(f"h-n{depth}", attributes=_nested(depth))])
        )  # fmt: skip
        cases.append(
            (f"nesting {depth} (EPCIS)", "/v1/epcis/capture", "4xx",
             [_epcis("[" + _nested(depth) + "]")])
        )  # fmt: skip
    return cases


def scenario_hostile(bench: Bench) -> Result:
    result = Result("hostile", "bad inputs to the gateway, NDJSON vs JSON array")
    run = bench.new_run("hostile")
    rows: list[dict[str, Any]] = []
    retried_503: list[str] = []
    try:
        run.start("gateway")
        client = httpx.Client(base_url=run.gateway_url, timeout=120)
        auth = {"Authorization": f"Bearer {run.token}"}

        wait_for(
            "hostile: gateway ready (Kafka reachable)",
            lambda: client.get("/readyz", headers=auth).status_code == 200,
            timeout_s=180,
        )

        def post(path: str, body: bytes, ctype: str) -> int:
            """The answer; a 503 (Kafka slow: nothing committed) is retried twice, and counted."""
            for _ in range(3):
                try:
                    answer = client.post(
                        path, content=body, headers={**auth, "Content-Type": ctype}
                    )
                except httpx.HTTPError as exc:
                    log(f"hostile: {path}: {type(exc).__name__}: {exc}")
                    return 0  # no answer (a crash or a hang)
                if answer.status_code != 503:
                    return answer.status_code
                retried_503.append(path)
                wait_for(
                    "hostile: gateway ready again",
                    lambda: client.get("/readyz", headers=auth).status_code == 200,
                    timeout_s=120,
                )
            return 503

        for name, path, expected, items in hostile_cases():
            if path == "/v1/epcis/capture":
                code_a = post(path, items[0].encode("utf-8", "surrogatepass"), "application/json")
                code_b = post(
                    path, items[0].encode("utf-8", "surrogatepass"), "application/ld+json"
                )
                forms = ("json", "ld+json")
            else:
                nd = "\n".join(items).encode()
                arr = ("[" + ",".join(items) + "]").encode()
                code_a = post(path, nd, "application/x-ndjson")
                code_b = post(path, arr, "application/json")
                forms = ("ndjson", "array")
            alive = run.procs["gateway"].poll() is None
            rows.append(
                {
                    "case": name,
                    "expected": expected,
                    forms[0]: code_a,
                    forms[1]: code_b,
                    "alive": alive,
                }
            )
            log(f"hostile: {name}: {forms[0]} {code_a}, {forms[1]} {code_b}")
        # raw invalid UTF-8 (a surrogate encoded as bytes)
        raw = _scan_text("h-11").replace('"h-11"', '"h-\xed\xa0\x80"').encode("latin-1")
        a = post("/v1/scans", raw, "application/x-ndjson")
        b = post("/v1/scans", b"[" + raw + b"]", "application/json")
        rows.append(
            {
                "case": "lone surrogate (raw bytes)",
                "expected": "4xx",
                "ndjson": a,
                "array": b,
                "alive": run.procs["gateway"].poll() is None,
            }
        )
        # one million items: EPCIS eventList, scans array, NDJSON lines; /healthz meanwhile
        for name, path, body, ctype in (
            (
                "1M-item EPCIS eventList",
                "/v1/epcis/capture",
                _epcis("[" + ",".join(["{}"] * 1_000_000) + "]").encode(),
                "application/json",
            ),
            (
                "1M-item scans array",
                "/v1/scans",
                ("[" + ",".join(["{}"] * 1_000_000) + "]").encode(),
                "application/json",
            ),
            (
                "1M-line scans NDJSON",
                "/v1/scans",
                ("{}\n" * 1_000_000).encode(),
                "application/x-ndjson",
            ),
        ):
            lags: list[float] = []
            stop = threading.Event()

            def ping(stop: threading.Event, lags: list[float]) -> None:
                with httpx.Client(base_url=run.gateway_url, timeout=30) as c:
                    while not stop.is_set():
                        t = time.monotonic()
                        with contextlib.suppress(httpx.HTTPError):
                            c.get("/healthz")
                        lags.append(time.monotonic() - t)

            pinger = threading.Thread(target=ping, args=(stop, lags), daemon=True)
            pinger.start()
            t0 = time.monotonic()
            code = post(path, body, ctype)
            took = time.monotonic() - t0
            stop.set()
            pinger.join(timeout=35)
            worst = max(lags) if lags else float("nan")
            rows.append(
                {
                    "case": f"{name} ({len(body) / 1e6:.1f} MB)",
                    "expected": "4xx",
                    "answer": code,
                    "answered_in_s": round(took, 3),
                    "healthz_worst_s": round(worst, 3),
                    "alive": run.procs["gateway"].poll() is None,
                }
            )
            log(f"hostile: {rows[-1]}")
        client.close()
    finally:
        run.stop_all()
    codes = [
        v
        for r in rows
        for k, v in r.items()
        if k in ("ndjson", "array", "json", "ld+json", "answer")
    ]
    consistent = sum(
        1
        for r in rows
        if "answer" in r
        or len({v for k, v in r.items() if k in ("ndjson", "array", "json", "ld+json")}) == 1
    )
    ok = sum(1 for c in codes if c == 202 or 400 <= c < 500)

    def as_expected(row: dict[str, Any]) -> bool:
        got = [v for k, v in row.items() if k in ("ndjson", "array", "json", "ld+json", "answer")]
        if row["expected"] == "4xx":
            return all(400 <= c < 500 for c in got)
        if row["expected"] == "202":
            return all(c == 202 for c in got)
        return all(c == 202 or 400 <= c < 500 for c in got)

    result.figures = {
        "requests": len(codes),
        "answered_4xx_or_202": ok,
        "5xx": sum(1 for c in codes if c >= 500),
        "no_answer": sum(1 for c in codes if c == 0),
        "cases": len(rows),
        "consistent_between_forms": consistent,
        "as_contract_v1_2_expects": sum(1 for r in rows if as_expected(r)),
        "not_as_expected": [r["case"] for r in rows if not as_expected(r)],
        "gateway_alive_at_end": all(r["alive"] for r in rows),
        "503_retried_kafka_slow": len(retried_503),
        "rows": rows,
    }
    return result


# --- replay check ------------------------------------------------------------------------


def last_event_time(scenario_file: Path) -> str:
    """The latest `event_time` of the records in the simulator's file. A truncated record
    (`invalid:truncated`) is written as its raw text cut inside its value, not JSON: it
    is a record with no time, as the other invalid ones (it raised JSONDecodeError, and
    the bench ended in a traceback after its results, the replay check never run)."""
    times = [""]
    with scenario_file.open() as lines:
        for line in lines:
            try:
                value = json.loads(line)["value"]
            except ValueError:
                continue
            if isinstance(value, dict):
                times.append(str(value.get("event_time") or ""))
    return max(times)


def replay_check(bench: Bench, ref: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """`chainwatch replay` of the same records vs the reference pipeline's alerts."""
    until = last_event_time(bench.scenario_file)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHAINWATCH_")}
    env.update(
        CHAINWATCH_DATA_DIR=str(bench.work / "replay"),
        CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS=bench.broker.bootstrap,
    )
    done = subprocess.run(
        [PYTHON, "-m", "chainwatch", "replay", str(bench.scenario_file), "--until", until],
        env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-300:]}
    replayed = {a["alert_id"]: a["status"] for a in map(json.loads, done.stdout.splitlines())}
    piped = {r["alert_id"]: r["status"] for r in ref["alerts"]}
    return {
        "until": until,
        "replay_alerts": len(replayed),
        "pipeline_alerts": len(piped),
        "only_in_replay": len(replayed.keys() - piped.keys()),
        "only_in_pipeline": len(piped.keys() - replayed.keys()),
        "status_differs": sum(1 for k in replayed.keys() & piped.keys() if replayed[k] != piped[k]),
    }


# --- output ------------------------------------------------------------------------------


def print_results(results: list[Result], bench: Bench, extra: dict[str, Any]) -> None:
    load = os.getloadavg()
    print(
        f"\nmachine: {os.cpu_count()} cores (nproc), "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    t = bench.traffic
    print(
        f"traffic: chainwatch simulate --seed {t.seed} --days {t.days} "
        f"--orders-per-day {t.orders_per_day} "
        f"--start {t.start} --rate {t.rate:g}: {bench.expected_records} records via the gateway"
    )
    print()
    print(
        "| scenario | fault | input records lost / duplicated | refused (503), dropped by client "
        "| engine output rows missing/extra/differing | result |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        if r.scenario == "hostile":
            f = r.figures
            verdict = (
                "ok"
                if f.get("5xx") == 0
                and f.get("no_answer") == 0
                and f.get("gateway_alive_at_end")
                and f.get("consistent_between_forms") == f.get("cases")
                else "FAIL"
            )
            print(
                f"| hostile | {r.fault} "
                f"| {f.get('answered_4xx_or_202')} of {f.get('requests')} answered 4xx/202, "
                f"{f.get('5xx')} x 5xx, {f.get('no_answer')} unanswered "
                f"| {f.get('consistent_between_forms')} of {f.get('cases')} consistent "
                f"| {f.get('as_contract_v1_2_expects')} of {f.get('cases')} as v1.2 expects "
                f"| {verdict}{' ' + r.error if r.error else ''} |"
            )
            continue
        if r.error:
            print(f"| {r.scenario} | {r.fault} | - | - | - | ERROR: {r.error[:200]} |")
            continue
        verdict = "ok" if r.passed else "FAIL"
        if r.client_gave_up:
            verdict += " (inputs differ: the client dropped refused records)"
        print(
            f"| {r.scenario} | {r.fault} | {r.lost} / {r.duplicated} | {r.client_gave_up} "
            f"| {r.derived_off} | {verdict} |"
        )
    for k, v in extra.items():
        print(f"\n{k}: {v}")


def print_details(r: Result) -> None:
    print(f"\n## {r.scenario}")
    for d in r.diffs:
        flag = "" if d.lost == d.duplicated == d.differ == 0 else "   <-- " + d.example
        print(
            f"  {d.table:<13} reference {d.reference:>6}  got {d.got:>6}  lost {d.lost:>4}  "
            f"duplicated/extra {d.duplicated:>4}  differ {d.differ:>4}"
            f"{f'  (client dropped {d.client_gave_up} refused)' if d.client_gave_up else ''}{flag}"
        )
    for k, v in r.figures.items():
        if k == "rows":
            for row in v:
                print(f"  {json.dumps(row)}")
        else:
            print(f"  {k}: {v}")
    for note in r.notes:
        print(f"  - {note}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["_dump"]:
        dump_main(Path(argv[1]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--orders-per-day", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rate", type=float, default=15.0, help="records/s posted by the simulator"
    )
    parser.add_argument("--broker-down-s", type=float, default=20.0)
    parser.add_argument("--lock-s", type=float, default=60.0)
    parser.add_argument("--webhook-down-s", type=float, default=300.0)
    parser.add_argument("--webhook-max-backoff-s", type=float, default=30.0)
    parser.add_argument(
        "--kill9",
        default="gateway,worker,sink,notify,broker",
        help="processes the kill9 scenario kills, in this order",
    )
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=39092,
        help="broker port; every other port follows it (controller +1, worker ops +2, "
        "gateways, receivers, the sink's query endpoint from +10 to +99)",
    )
    parser.add_argument(
        "--fresh-reference", action="store_true", help="redo the clean run even if one is kept"
    )
    parser.add_argument("--no-replay", action="store_true", help="skip the chainwatch replay check")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    bench = Bench(args)
    results: list[Result] = []
    extra: dict[str, Any] = {}

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    runners = {
        "broker": scenario_broker,
        "kill9": scenario_kill9,
        "lock": scenario_lock,
        "webhook": scenario_webhook,
        "hostile": scenario_hostile,
    }
    try:
        log(f"broker on {bench.broker.bootstrap} (data {bench.broker.data_dir})")
        bench.broker.fresh()
        if any(s != "hostile" for s in chosen):
            bench.write_input()
        for name in chosen:
            log(f"scenario {name}")
            try:
                results.append(runners[name](bench))
                print_details(results[-1])
            except BenchError as exc:
                log(f"scenario {name} failed: {exc}")
                results.append(Result(name, name, error=str(exc)))
                for run in bench.runs:
                    run.stop_all()
        if bench._reference is not None and not args.no_replay:
            log("replay check")
            extra["chainwatch replay vs reference pipeline (alerts)"] = replay_check(
                bench, bench._reference
            )
    except KeyboardInterrupt:
        log("interrupted: stopping every process")
        return 130
    finally:
        bench.stop_everything()
        print_results(results, bench, extra)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
