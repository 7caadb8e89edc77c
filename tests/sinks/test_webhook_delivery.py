"""Alerts → a real local HTTP receiver: retries, signatures, isolation, dead letters, log."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer
from sink_harness import prepare_all_topics, publish
from sink_samples import make_alert
from standardwebhooks import Webhook

from chainwatch.settings import Settings
from chainwatch.sink_runner import run_sink
from schemas.alerts import Alert, AlertStatus
from sinks.clickhouse.connection import open_client
from sinks.webhooks.dispatcher import publish as publish_log
from sinks.webhooks.records import DEAD_LETTER_TOPIC, DELIVERIES_TOPIC, WebhookDeadLetter
from sinks.webhooks.service import build_notifier, load_configured
from streams.topics import ALERTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENDPOINTS = ("healthy", "flaky", "dead", "throttled", "reject")


def _secret(name: str) -> str:
    return "whsec_" + base64.b64encode(f"secret-of-{name}-0123456789".encode()).decode()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    at: datetime


@dataclass
class Receiver:
    """Scripted answers per endpoint path; every request recorded."""

    requests: list[Received] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> tuple[int, dict[str, str], float]:
        """(status, headers, delay before answering) for the n-th request to `path`."""
        with self.lock:
            n = self.counts[path] = self.counts.get(path, 0) + 1
        if path == "/flaky":
            return {1: (500, {}, 0.0), 2: (500, {}, 0.0), 3: (200, {}, 4.0)}.get(n, (200, {}, 0.0))
        if path == "/dead":
            return 503, {}, 0.0
        if path == "/throttled" and n == 1:
            return 429, {"Retry-After": "1"}, 0.0
        if path == "/reject":
            return 400, {}, 0.0
        return 200, {}, 0.0


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = self.rfile.read(length).decode()
            if len(body) != length:
                return  # the client gave up mid-request (its attempt deadline)
            state.requests.append(
                Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    datetime.now(UTC),
                )
            )
            status, headers, delay = state.answer(self.path)
            if delay:
                time.sleep(delay)  # longer than the client's timeout
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up on us

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _subscriptions(tmp_path: Path, port: int) -> Path:
    filters = {
        "throttled": {"statuses": ["resolved"]},
        "reject": {"customer_ids": ["C-0"]},
    }
    endpoints = [
        {
            "name": name,
            "url": f"http://127.0.0.1:{port}/{name}",
            "secret": _secret(name),
            "filters": filters.get(name, {}),
            "concurrency": 16 if name == "dead" else 1,
        }
        for name in ENDPOINTS
    ]
    path = tmp_path / "subscriptions.yaml"
    path.write_text(json.dumps({"endpoints": endpoints}))  # JSON is YAML
    return path


def _read_topic(settings: Settings, topic: str, expected: int) -> list[bytes]:
    consumer = KafkaConsumer(
        settings.kafka.topic(topic),
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return [r.value for r in consumer][: expected + 100]
    finally:
        consumer.close()


def test_every_alert_reaches_every_subscriber_despite_failing_receivers(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
) -> None:
    state, port = receiver
    settings = settings_factory(
        webhooks={
            "subscriptions": str(_subscriptions(tmp_path, port)),
            "allowed_hosts": "127.0.0.1",
            "allowed_networks": "127.0.0.1",  # the test's receiver is on loopback
            "timeout_s": 2.0,
            "initial_backoff_s": 0.05,
            "max_backoff_s": 0.2,
            "retry_horizon_s": 6.0,
            "max_attempts": 1000,
        }
    )
    prepare_all_topics(settings)
    alerts: list[Alert] = [make_alert(n) for n in range(10)]
    alerts += [make_alert(n, AlertStatus.RESOLVED) for n in range(5)]
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))
    publish(settings, ALERTS, [(b"x", b"not an alert")])

    notifier = build_notifier(settings, load_configured(settings))
    stats = asyncio.run(notifier.run(asyncio.Event(), drain=True))

    by_path: dict[str, list[Received]] = {}
    data: dict[str, dict[str, Any]] = {}  # webhook-id -> the alert it carried
    for request in state.requests:
        by_path.setdefault(request.path, []).append(request)
        # every request, retries included, verifies with the endpoint's secret
        Webhook(_secret(request.path[1:])).verify(request.body, request.headers)
        data[request.headers["webhook-id"]] = json.loads(request.body)["data"]
    got = {path: {r.headers["webhook-id"] for r in reqs} for path, reqs in by_path.items()}
    ids = got["/healthy"]
    assert len(ids) == len(alerts)  # one id per distinct message
    assert sorted(json.dumps(data[i], sort_keys=True) for i in ids) == sorted(
        json.dumps(a.model_dump(mode="json"), sort_keys=True) for a in alerts
    )
    assert len(by_path["/healthy"]) == len(alerts)  # no retries needed, none made
    assert got["/flaky"] == ids  # after 500, 500, a timeout
    assert len(by_path["/flaky"]) == len(alerts) + 3
    assert got["/throttled"] == {i for i in ids if data[i]["status"] == "resolved"}
    first, second = by_path["/throttled"][:2]
    assert (second.at - first.at).total_seconds() >= 0.9  # Retry-After: 1 honoured
    reject_ids = {i for i in ids if data[i]["customer"]["customer_id"] == "C-0"}
    assert got["/reject"] == reject_ids
    assert len(by_path["/reject"]) == len(reject_ids)  # 400: never retried
    assert stats.invalid == 1

    # dead letters: every dead-endpoint delivery and every rejected one, nothing else
    letters = [
        WebhookDeadLetter.model_validate_json(v)
        for v in _read_topic(settings, DEAD_LETTER_TOPIC, 30)
    ]
    assert {(d.endpoint, d.webhook_id) for d in letters} == (
        {("dead", i) for i in ids} | {("reject", i) for i in reject_ids}
    )
    assert stats.gave_up == len(letters)
    assert all(_secret(d.endpoint) not in d.model_dump_json() for d in letters)
    # the healthy endpoint did not wait for the dead one to give up (its pace on a
    # loaded machine is the broker's, so only its start is compared)
    first_healthy = min(r.at for r in by_path["/healthy"])
    assert first_healthy < min(d.failed_at for d in letters if d.endpoint == "dead")

    run_sink(settings, drain=True)
    client = open_client(settings)
    try:
        rows = client.query(
            "SELECT endpoint, outcome, count(), max(attempts) FROM webhook_deliveries "
            "GROUP BY endpoint, outcome ORDER BY endpoint, outcome"
        ).result_rows
    finally:
        client.close()
    table = {(e, o): (int(n), int(a)) for e, o, n, a in rows}
    assert table[("healthy", "delivered")] == (15, 1)
    assert table[("flaky", "delivered")][0] == 15
    assert table[("dead", "gave_up")][0] == 15
    assert table[("dead", "gave_up")][1] > 3
    assert table[("reject", "gave_up")] == (len(reject_ids), 1)
    assert table[("throttled", "delivered")][0] == 5


def test_a_record_the_broker_refuses_is_reported_not_retried_forever(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)

    async def run() -> bool:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
        await producer.start()
        try:
            return await asyncio.wait_for(
                publish_log(producer, settings.kafka.topic(DELIVERIES_TOPIC), "k", b"x" * 2**21),
                timeout=30,
            )
        finally:
            await producer.stop()

    assert asyncio.run(run()) is False
