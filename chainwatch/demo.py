"""`chainwatch demo` (`make demo`): the pipeline on the embedded defaults.

Starts the local broker (if it is not running), a worker and a sink as child
processes, publishes generated traffic, and prints what has reached ClickHouse
every few seconds. Ctrl-C stops every process it started, broker included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from chainwatch.errors import UserError
from chainwatch.local_kafka import LocalBroker
from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings
from chainwatch.traffic import scan_events
from streams.topics import SCANS

RATE_PER_S = 200
REPORT_EVERY_S = 5.0


@contextlib.contextmanager
def _children(settings: Settings, console: Console) -> Iterator[list[subprocess.Popen[bytes]]]:
    log_dir = settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("worker", "sink"):
            log = open(log_dir / f"demo-{name}.log", "ab")  # noqa: SIM115 - owned by the child
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "chainwatch", name],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=os.environ.copy(),
                    start_new_session=True,
                )
            )
            console.print(f"started {name} (pid {procs[-1].pid}, log {log_dir}/demo-{name}.log)")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _report(settings: Settings, console: Console) -> None:
    from sinks.clickhouse.readers import open_reader

    try:
        reader = open_reader(settings)
    except UserError as exc:
        console.print(f"[dim]waiting for ClickHouse: {exc}[/]")
        return
    try:
        result = reader.query(
            "SELECT stage, count() AS scans, uniqExact(order_id) AS orders, "
            "max(event_time) AS latest FROM scans GROUP BY stage ORDER BY stage"
        )
    except UserError as exc:
        console.print(f"[dim]waiting for ClickHouse: {exc}[/]")
        return
    finally:
        reader.close()
    table = Table("stage", "scans", "orders", "latest event", title="scans in ClickHouse")
    for row in result.rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)


def run_demo(settings: Settings, console: Console) -> None:
    from kafka import KafkaProducer

    broker = LocalBroker(settings) if settings.kafka.is_local else None
    started_broker = False
    if broker is not None and not broker.status().running:
        broker.start(progress=lambda msg: console.print(f"[dim]{msg}[/]"))
        started_broker = True
    try:
        prepare_topics(settings)
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap, acks="all", linger_ms=20
        )
        topic = topic_names(settings)(SCANS)
        with _children(settings, console) as procs:
            console.print(f"publishing ~{RATE_PER_S} scans/s to {topic}; Ctrl-C stops everything")
            events = scan_events(seed=int(time.time()))
            next_report = time.monotonic() + REPORT_EVERY_S
            while True:
                tick = time.monotonic()
                for _ in range(RATE_PER_S // 10):
                    key, value = next(events)
                    producer.send(topic, key=key, value=value)
                if any(p.poll() is not None for p in procs):
                    raise UserError(f"a demo process exited; see {settings.log_dir}/demo-*.log")
                if tick >= next_report:
                    _report(settings, console)
                    next_report = tick + REPORT_EVERY_S
                time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        with contextlib.suppress(Exception):
            producer.close(timeout=5)
        if broker is not None and started_broker:
            broker.stop()
            console.print("kafka stopped")
