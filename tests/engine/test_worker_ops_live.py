"""A real `chainwatch worker` on the suite's broker serves its metrics and probes.

Not ready until it has started and owns partitions; then it counts what it
handles, reports lag per partition, and exports every worker series the
Prometheus dashboard queries.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings
from dashboards import prometheus
from schemas.common import format_utc
from schemas.plan import load_plan
from streams.topics import ORDERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""  # not listening yet


def _until(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)  # polling interval of a condition with a deadline
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _value(body: bytes, name: str, **labels: str) -> float | None:
    return _samples(body).get((name, frozenset(labels.items())))


@pytest.fixture
def worker(settings_factory: Callable[..., Settings]) -> Iterator[tuple[Settings, str]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_factory(
        engine={"app_id": f"ops-{os.getpid()}-{time.time_ns()}", "metrics_port": port}
    )
    prepare_topics(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chainwatch", "worker"],
        env={**os.environ, **settings.to_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield settings, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_running_worker_serves_probes_and_every_metric_the_dashboard_reads(
    worker: tuple[Settings, str],
) -> None:
    settings, base = worker
    _until("the worker's ops port answers /healthz", lambda: _get(f"{base}/healthz")[0] == 200, 60)
    _until("the worker is ready", lambda: _get(f"{base}/readyz")[0] == 200, 120)
    assert json.loads(_get(f"{base}/readyz")[1]) == {"ready": True, "reasons": []}

    placed = datetime.now(UTC) - timedelta(hours=1)
    order = {
        "op": "created", "order_id": "PO-OPS-1", "customer_id": "C-1", "product": "crewneck",
        "quantity": 10, "placed_at": format_utc(placed),
        "due_at": format_utc(placed + timedelta(days=20)),
    }  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    try:
        orders = topic_names(settings)(ORDERS)
        producer.send(orders, key=b"PO-OPS-1", value=json.dumps(order).encode())
        producer.send(orders, key=b"PO-OPS-2", value=b"not json")
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    def counted() -> bool:
        body = _get(f"{base}/metrics")[1]
        ok = _value(body, "chainwatch_worker_records_total", topic=ORDERS, outcome="ok")
        dead = _value(
            body, "chainwatch_worker_records_total", topic=ORDERS, outcome="dead_lettered"
        )
        keys = _value(body, "chainwatch_worker_table_keys", table="orders")  # gauges: every 2 s
        lag = [k for k in _samples(body) if k[0] == "chainwatch_worker_consumer_lag_records"]
        return (ok, dead, keys, len(lag)) == (1, 1, 1, 7 * settings.kafka.partitions)  # 4 + 3

    _until("both records counted and lag reported for every input partition", counted, 60)
    body = _get(f"{base}/metrics")[1]
    assert _value(body, "chainwatch_worker_dead_letters_total", reason="not_json") == 1
    deadlines = [
        v for (n, _), v in _samples(body).items() if n == "chainwatch_worker_deadline_index_entries"
    ]
    assert sum(deadlines) >= 1  # the order's start deadline is scheduled
    assert _value(body, "chainwatch_worker_assigned_partitions", topic=ORDERS) == 4
    assert _value(body, "chainwatch_worker_ready") == 1
    exported = {name for name, _ in _samples(body)}
    wanted = {
        n for n in prometheus.metric_names(prometheus.build(load_plan(None))) if "_worker_" in n
    }
    assert len(wanted) >= 10
    assert wanted <= exported, wanted - exported
