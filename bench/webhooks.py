"""Webhook delivery throughput: `chainwatch notify`'s code next to bare POSTs, in one run.

    .venv/bin/python bench/webhooks.py [--alerts 5000] [--concurrency 16] [--runs 3]

Needs a Kafka broker (CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS, else the local one,
`chainwatch kafka start`). Uses fresh topics. One local receiver (uvicorn, answers 204)
takes both, and times them by what it receives (first request to last), so a group
join or a client's start is not counted. Prints per run:
- the notifier as `chainwatch notify` builds it (`build_notifier`: every delivery
  rendered, signed, logged to Kafka and committed, the silences consulted, with one
  silence in force that covers none of these alerts);
- bare POSTs of the same bodies (rendered beforehand), the same number in flight, each
  worker with an httpx client of one connection: what httpx, the receiver and the
  loopback cost alone;
- the ratio, and the notifier process's CPU µs a delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvicorn
from kafka import KafkaProducer

from chainwatch.free_port import free_port
from chainwatch.notify_runner import build_notifier, ensure_notify_topics
from chainwatch.settings import Settings
from chainwatch.silences import add
from schemas.alerts import Alert, AlertCustomer, AlertStatus, AlertType, Severity
from sinks.webhooks.payloads import render
from sinks.webhooks.silences import Silence
from sinks.webhooks.subscriptions import Subscriptions
from streams.topics import ALERTS

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SEND_TIMEOUT_S = 60.0
"""The alerts' producer's deadline for all of them."""
RECEIVER_START_S = 30.0


@dataclass
class Receiver:
    """Answers every POST 204 and counts them, with when the first and the last came.
    In a process of its own (`--receiver PORT`), so that neither side's CPU or GIL is
    the other's. `GET /stats` says what it counted since `DELETE /stats`."""

    count: int = 0
    first: float = 0.0
    last: float = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = b""
        if scope["method"] == "POST":
            now = time.perf_counter()
            self.count += 1
            self.first = self.first or now
            self.last = now
            status = 204
        elif scope["method"] == "DELETE":
            self.count, self.first, self.last = 0, 0.0, 0.0
            status = 204
        else:
            status = 200
            body = json.dumps({"count": self.count, "seconds": self.last - self.first}).encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})


class ReceiverProcess:
    """The receiver's process, and what it counted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._stats = f"http://127.0.0.1:{self.port}/stats"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--receiver", str(self.port)], stdin=subprocess.DEVNULL
        )
        ends = time.monotonic() + RECEIVER_START_S
        while time.monotonic() < ends and self.process.poll() is None:
            try:
                httpx.get(self._stats, timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"the receiver did not answer on port {self.port}")

    def reset(self) -> None:
        httpx.delete(self._stats, timeout=10).raise_for_status()

    def received(self) -> tuple[int, float]:
        """How many POSTs, and deliveries/s from the first to the last."""
        stats = httpx.get(self._stats, timeout=10).json()
        count, seconds = stats["count"], stats["seconds"]
        return count, (count - 1) / seconds if count > 1 and seconds > 0 else 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def alerts(n: int, run: int) -> Iterator[Alert]:
    for i in range(n):
        yield Alert(
            alert_id=f"{run:08x}{i:056x}",
            type=AlertType.STAGE_OVERDUE,
            severity=Severity.CRITICAL,
            status=AlertStatus.OPEN,
            order_id=f"PO-{i}",
            stage="knitting",
            visit=1,
            deadline="2027-03-01T00:00:00Z",
            detected_at="2027-03-01T00:00:00Z",
            customer=AlertCustomer(customer_id="C-1", tier="gold"),
        )


def publish(settings: Settings, values: list[Alert]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, linger_ms=20, acks="all")
    try:
        topic = settings.kafka.topic(ALERTS)
        for alert in values:
            producer.send(
                topic, key=alert.alert_id.encode(), value=alert.model_dump_json().encode()
            )
        producer.flush(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close(timeout=10)


def bench_notifier(
    settings: Settings, url: str, concurrency: int, receiver: ReceiverProcess, values: list[Alert]
) -> tuple[float, float]:
    """Deliveries/s as received, and the process's CPU µs a delivery (the whole drain)."""
    subscriptions = Subscriptions.model_validate(
        {"endpoints": [{"name": "bench", "url": url, "secret": SECRET, "concurrency": concurrency}]}
    )
    notifier = build_notifier(settings, subscriptions)
    receiver.reset()
    publish(settings, values)
    cpu = time.process_time()
    stats = asyncio.run(notifier.run(asyncio.Event(), drain=True))
    cpu = time.process_time() - cpu
    count, rate = receiver.received()
    if stats.delivered != len(values) or count != len(values):
        raise SystemExit(
            f"the notifier delivered {stats.delivered} of {len(values)} ({count} received): {stats}"
        )
    return rate, cpu / len(values) * 1e6


def bench_bare(
    url: str, concurrency: int, receiver: ReceiverProcess, values: list[Alert]
) -> tuple[float, float]:
    """Deliveries/s as received of plain POSTs of the same bodies, and the process's CPU
    µs a POST: `concurrency` workers, each with an httpx client of one connection (as the
    notifier's workers have: httpx's cheapest way; one pool of `concurrency` connections
    costs ~1 ms of CPU more a POST)."""
    bodies = [render(alert, "standard")[1].encode() for alert in values]
    headers = {"content-type": "application/json", "user-agent": "bench-bare"}
    receiver.reset()
    cpu = time.process_time()

    async def post_all() -> None:
        queue = iter(bodies)

        async def worker() -> None:
            limits = httpx.Limits(max_connections=1)
            async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=10) as client:
                for body in queue:
                    response = await client.post(url, content=body, headers=headers)
                    if response.status_code != 204:
                        raise SystemExit(f"the receiver answered {response.status_code}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(post_all())
    cpu = time.process_time() - cpu
    count, rate = receiver.received()
    if count != len(bodies):
        raise SystemExit(f"the receiver counted {count} of {len(bodies)} POSTs")
    return rate, cpu / len(bodies) * 1e6


def silence_elsewhere(settings: Settings) -> None:
    """One silence in force for a unit no alert here names: every delivery consults it."""
    now = datetime.now(UTC)
    silence = Silence(
        units=["bench-unit-not-alerting"],
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=1),
        reason="bench: a silence in force that covers none of its alerts",
    )
    add(settings, silence)


def bench_settings(root: Path, run_id: str) -> Settings:
    kafka: dict[str, Any] = {"topic_prefix": f"benchhooks{run_id}.", "partitions": 4}
    if "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS" in os.environ:
        kafka["bootstrap_servers"] = os.environ["CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS"]
    return Settings(
        data_dir=root,
        kafka=kafka,
        engine={"app_id": f"benchhooks{run_id}"},
        webhooks={"allowed_networks": "127.0.0.1"},  # the receiver is local
    )


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def serve(port: int) -> None:
    """The receiver's process: until SIGTERM."""
    uvicorn.run(Receiver(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver is not None:
        serve(args.receiver)
        return
    for name in ("alerts", "concurrency", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    cpus = os.cpu_count()
    print(f"machine: {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}")
    receiver = ReceiverProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="cw-bench-hooks-") as tmp:
            settings = bench_settings(Path(tmp), uuid.uuid4().hex[:6])
            ensure_notify_topics(settings)
            silence_elsewhere(settings)
            for run in range(1, args.runs + 1):
                values = list(alerts(args.alerts, run))
                url, flight = receiver.url, args.concurrency
                hooks, cpu_us = bench_notifier(settings, url, flight, receiver, values)
                print(
                    f"run {run} notifier: {args.alerts:,} deliveries {hooks:,.0f}/s as received "
                    f"(signed, logged to Kafka, silences consulted; {flight} in flight); "
                    f"{cpu_us:,.0f} µs CPU a delivery; {_load()}"
                )
                bare, bare_us = bench_bare(url, flight, receiver, values)
                print(
                    f"run {run} bare:     {args.alerts:,} POSTs {bare:,.0f}/s as received (the "
                    f"same bodies, httpx, {flight} in flight); {bare_us:,.0f} µs CPU a POST; "
                    f"{_load()}"
                )
                print(f"run {run} ratio: notifier / bare = {hooks / bare:.0%}")
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
