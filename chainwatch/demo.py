"""`chainwatch demo` (`make demo`): the pipeline on the embedded defaults.

Starts the local broker (if it is not running), then a worker, the ClickHouse
sink, the webhook notifier (delivering critical alerts to a signature-checking
receiver inside the demo), the ingest gateway and the knitwear simulator
(posting through the gateway with a token made for this run) as child processes, and prints what
has reached ClickHouse, with the `chainwatch status` view, every few seconds.
The simulated factory runs faster than real time (`RATE_PER_S` records per
second), so the worker runs on its event-time clock: deadlines fall due as
simulated time passes and alerts appear within minutes.
Ctrl-C stops every process it started, the broker included.

Each run starts clean: its topics (`demo-<run>.` prefix), its engine (app id
`demo-<run>`) and its ClickHouse database (`demo_<run>`) are its own, so a
second run never inherits the first one's state or event clock, and records
posted to the default topics never reach it. `make clean-data` removes old runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console
from rich.table import Table

from chainwatch.cli_context import cell_text
from chainwatch.commands.gateway import stop_timeout_s as gateway_stop_timeout_s
from chainwatch.demo_receiver import DemoReceiver
from chainwatch.errors import USER_ERRORS, UserError
from chainwatch.free_port import free_port
from chainwatch.lifeline import start_child
from chainwatch.local_kafka import LocalBroker
from chainwatch.logs import silenced
from chainwatch.notify_runner import stop_timeout_s as notify_stop_timeout_s
from chainwatch.replay import stop_workers
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings, overlaid
from chainwatch.stop_deadline import STOP_MARGIN_S
from sinks.clickhouse.readers import StoreReader, open_reader

RATE_PER_S = 60
REPORT_EVERY_S = 5.0
SIMULATED_CLOCK_ENV = {
    # The simulated factory runs ahead of the wall clock (about a simulated week per
    # minute at RATE_PER_S): the engine follows event time, and the gateway accepts event
    # times far beyond its own clock, which it otherwise refuses as timestamp_future after
    # 24 h (every record after the demo's first 15 s or so was dead-lettered).
    "CHAINWATCH_ENGINE__CLOCK": "event",
    "CHAINWATCH_GATEWAY__MAX_CLOCK_SKEW_S": str(100 * 365 * 86_400),
}


def _gateway_credentials(settings: Settings) -> tuple[Path, Path]:
    """A fresh admin token for this run: its digest for the gateway, the token for the simulator."""
    from streams.ingest.auth import hash_token

    folder = settings.data_path / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tokens = folder / "tokens.yaml"
    tokens.write_text(
        f"tokens:\n  - name: demo-simulator\n    sha256: {hash_token(token)}\n    role: admin\n"
    )
    token_file = folder / "simulator.token"
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    return tokens, token_file


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Until the gateway takes posts: it serves at once, ready once its topics are prepared."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError("the demo gateway exited at start-up; see its log")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise UserError(f"the demo gateway was not ready on {url} within {timeout_s:.0f}s; see its log")


@contextlib.contextmanager
def _children(
    settings: Settings, console: Console
) -> Iterator[tuple[list[subprocess.Popen[bytes]], DemoReceiver]]:
    log_dir = settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    tokens, token_file = _gateway_credentials(settings)
    receiver = DemoReceiver().start()
    subscriptions = receiver.write_subscriptions(settings.data_path / "demo" / "subscriptions.yaml")
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    children: dict[str, list[str]] = {
        "worker": ["worker"],
        "sink": ["sink"],
        "notify": ["notify"],
        "gateway": ["gateway", "--host", "127.0.0.1", "--port", str(port), "--tokens", str(tokens)],
        "simulator": [
            "simulate", "--gateway", gateway_url, "--token-file", str(token_file),
            "--rate", str(RATE_PER_S), "--id-prefix", "DEMO", "--anomaly-scale", "0.5",
        ],
    }  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = overlaid(
            os.environ,
            {
                **_run_env(settings),
                **SIMULATED_CLOCK_ENV,
                "CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS": str(subscriptions),
                "CHAINWATCH_WEBHOOKS__ALLOWED_NETWORKS": "127.0.0.1",  # the demo's own receiver
                "CHAINWATCH_DEMO_WEBHOOK_SECRET": receiver.secret,
            },
        )
        envs = child_environments(settings, env, children)
        for name, args in children.items():
            if name == "simulator":
                _wait_ready(gateway_url, procs[-1])
            with open(log_dir / f"demo-{name}.log", "ab") as log:
                # each stops by itself if the demo dies without stopping it (SIGKILL)
                procs.append(
                    start_child(args, env=envs[name], log_file=log, start_new_session=True)
                )
            console.print(
                f"started {name} (pid {procs[-1].pid}, log {cell_text(log_dir)}/demo-{name}.log)",
                markup=False,
                highlight=False,
            )
        console.print(f"the simulated factory posts to the ingest gateway at {gateway_url}")
        yield procs, receiver
    finally:
        stop_workers(procs, children_stop_grace_s(settings))
        receiver.stop()


def child_environments(
    settings: Settings, env: dict[str, str], names: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Each child's environment: `env`, and with `CHAINWATCH_METRICS_PORT` set (not 0, off)
    the sink on that port and the notifier on the next (the one below at 65535). Both read
    the one setting and bind exactly it, so with `env` passed on as it was the notifier
    found the sink's port taken, exited at start, and the demo stopped with "a demo
    process exited"."""
    port = settings.metrics_port
    ports = {"sink": port, "notify": port + 1 if port < 65535 else port - 1} if port else {}
    return {
        name: overlaid(env, {"CHAINWATCH_METRICS_PORT": str(ports[name])}) if name in ports else env
        for name in names
    }


SCANS_SQL = (
    "SELECT count() AS scans, uniqExact(order_id) AS orders, max(event_time) AS latest FROM scans"
)
ALERTS_SQL = (
    "SELECT type, countIf(status = 'open') AS open, countIf(status = 'resolved') AS resolved, "
    "max(detected_at) AS latest FROM alerts_current WHERE status != 'retracted' "
    "GROUP BY type ORDER BY type"
)


def _table(reader: StoreReader, sql: str, title: str, console: Console) -> None:
    try:
        result = reader.query(sql)
    except USER_ERRORS as exc:
        console.print(f"[dim]{title}: {exc}[/]")
        return
    table = Table(*result.columns, title=title)
    for row in result.rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)


def _report(settings: Settings, console: Console) -> None:
    """The alert counts, then what `chainwatch status --once` shows."""
    from chainwatch.commands.status import render, snapshot

    try:
        reader = open_reader(settings)
    except USER_ERRORS as exc:
        console.print(f"[dim]waiting for ClickHouse: {exc}[/]")
        return
    try:
        _table(reader, SCANS_SQL, "scans in ClickHouse", console)
        _table(reader, ALERTS_SQL, "alerts in ClickHouse", console)
    finally:
        reader.close()
    try:
        console.print(render(snapshot(settings), refreshed=datetime.now(UTC)))
    except USER_ERRORS as exc:
        console.print(f"[dim]status: {exc}[/]")


def for_this_run(settings: Settings, run_id: str) -> Settings:
    """The settings of one demo run: its own topics, engine and ClickHouse database."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"topic_prefix": f"{settings.kafka.topic_prefix}demo-{run_id}."}
            ),
            "engine": settings.engine.model_copy(update={"app_id": f"demo-{run_id}"}),
            "clickhouse": settings.clickhouse.model_copy(update={"database": f"demo_{run_id}"}),
        }
    )


def children_stop_grace_s(settings: Settings) -> float:
    """How long the demo waits for its children, together, after SIGTERM before it kills
    them: past each child's own stop deadline (the gateway's, the notifier's, the engine's
    for the others; the children read these settings too), so a child is killed only when
    its own deadline failed, never mid-way through a graceful stop that would have logged
    `process_stopped`. A fixed 45 s was past the defaults' deadlines only."""
    own = (
        gateway_stop_timeout_s(settings),
        notify_stop_timeout_s(settings),
        settings.engine.stop_timeout_s,
    )
    return max(own) + STOP_MARGIN_S


def _run_env(settings: Settings) -> dict[str, str]:
    """What the child processes need to see `for_this_run`'s settings."""
    return {
        "CHAINWATCH_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CHAINWATCH_ENGINE__APP_ID": settings.engine.app_id,
        "CHAINWATCH_CLICKHOUSE__DATABASE": settings.clickhouse.database,
    }


def _farewell(settings: Settings, console: Console, broker_stopped: bool, ran: bool) -> None:
    """After Ctrl-C: what still runs, where the logs and this run's data are (if it ran)."""
    if settings.kafka.is_local:
        console.print(
            "kafka stopped"
            if broker_stopped
            else "kafka keeps running (it ran before the demo); `chainwatch kafka stop` stops it",
            soft_wrap=True,
        )
    if not ran:  # stopped before its processes started: no logs, no data
        return
    console.print(
        f"logs: {cell_text(settings.log_dir)}/demo-*.log",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    console.print(
        f"this run's data: CHAINWATCH_CLICKHOUSE__DATABASE={settings.clickhouse.database} "  # noqa: S608 - a hint printed, not run
        "chainwatch sql 'SELECT type, status, count() FROM alerts_current GROUP BY ALL'; "
        "`make clean-data` deletes every run",
        soft_wrap=True,
    )


@contextlib.contextmanager
def interrupted_by_stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does; Ctrl-C works even when inherited off.

    The demo's children run in their own sessions (so one Ctrl-C reaches the demo only,
    which then stops them in order); a supervisor's SIGTERM, a closed terminal, or a
    shell that started the demo with `&` (SIGINT ignored) used to leave them running.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for sig in previous:  # once: a second SIGTERM must not cut the children's shutdown
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous_int = signal.getsignal(signal.SIGINT)
    for sig in previous:
        signal.signal(sig, interrupt)
    if previous_int == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, previous_int)


def run_demo(settings: Settings, console: Console) -> None:
    with interrupted_by_stop_signals():
        _run_demo(settings, console)


def _run_demo(settings: Settings, console: Console) -> None:
    settings = for_this_run(settings, datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
    broker = LocalBroker(settings) if settings.kafka.is_local else None
    started_broker = ran = False
    if broker is not None and not broker.status().running:
        broker.start(progress=lambda msg: console.print(f"[dim]{msg}[/]"))
        started_broker = True
    try:
        with silenced("kafka"):  # a broker that does not answer is our one line, not five
            prepare_topics(settings)
        ran = True
        with _children(settings, console) as (procs, receiver):
            console.print(
                f"simulating the knitwear chain at ~{RATE_PER_S} records/s; Ctrl-C stops everything"
            )
            while True:
                time.sleep(REPORT_EVERY_S)
                for proc in procs:
                    if proc.poll() is not None:
                        raise UserError(f"a demo process exited; see {settings.log_dir}/demo-*.log")
                _report(settings, console)
                delivered = receiver.counts["verified"]
                console.print(
                    f"webhooks: {delivered} critical alert deliveries received with valid "
                    f"signatures ({receiver.counts['bad signature']} bad)"
                )
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        if broker is not None and started_broker:
            broker.stop()
        _farewell(settings, console, broker_stopped=started_broker, ran=ran)
