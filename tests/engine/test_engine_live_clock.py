"""Live mode: a deadline produces its alert within 1 s even when no input arrives.

The same worker (one start-up for both: the suite's time) serves its ops
endpoints: not ready before it has started, then every worker series the
Prometheus dashboard reads, with the counts of what it was sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from worker_ops import created_order, free_port, get, named, records_within, samples, until, value

from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings
from dashboards import prometheus
from schemas.plan import load_plan
from streams.topics import ALERTS, ORDER_STATE, ORDERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def live_worker(settings_factory: Callable[..., Settings]) -> Iterator[Settings]:
    settings = settings_factory(
        engine={"app_id": f"live-{os.getpid()}-{time.time_ns()}", "metrics_port": free_port()}
    )
    prepare_topics(settings)
    worker = subprocess.Popen(
        [sys.executable, "-m", "chainwatch", "worker"],
        env={**os.environ, **settings.to_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield settings
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_start_overdue_fires_within_a_second_of_its_deadline_without_input(
    live_worker: Settings,
) -> None:
    settings = live_worker
    names = topic_names(settings)
    ops = f"http://127.0.0.1:{settings.engine.metrics_port}"
    until("the worker's ops port answers /healthz", lambda: get(f"{ops}/healthz")[0] == 200, 60)
    until("the worker is ready", lambda: get(f"{ops}/readyz")[0] == 200, 120)
    assert json.loads(get(f"{ops}/readyz")[1]) == {"ready": True, "reasons": []}
    consumer = KafkaConsumer(
        names(ALERTS), names(ORDER_STATE),
        bootstrap_servers=settings.kafka.bootstrap, auto_offset_reset="earliest",
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    try:
        # 1. the worker is up once it has answered a first order with a snapshot
        producer.send(
            names(ORDERS), key=b"PO-WARM", value=created_order("PO-WARM", datetime.now(UTC))
        )
        producer.send(names(ORDERS), key=b"PO-BAD", value=b"not json")  # a dead letter
        producer.flush()
        assert any(r.key == b"PO-WARM" for r in records_within(consumer, 120)), (
            "worker never answered"
        )

        # 2. an order whose first scan is due in 3 s; nothing else is ever sent
        deadline = datetime.now(UTC) + timedelta(seconds=3)
        placed_at = deadline - timedelta(hours=24)  # the plan's start_within
        producer.send(names(ORDERS), key=b"PO-LIVE", value=created_order("PO-LIVE", placed_at))
        producer.flush()

        fired: Any = None
        for record in records_within(consumer, 30):
            if record.topic == names(ALERTS):
                alert = json.loads(record.value)
                if alert["order_id"] == "PO-LIVE" and alert["type"] == "start_overdue":
                    fired = record
                    break
        assert fired is not None, "no start_overdue alert within 30 s"
        alert = json.loads(fired.value)
        assert alert["status"] == "open"
        published_at = datetime.fromtimestamp(fired.timestamp / 1000, UTC)
        lateness = (published_at - deadline).total_seconds()
        assert -0.05 <= lateness <= 1.0, f"alert published {lateness:.3f}s after its deadline"

        # 3. what the worker reports (gauges are recomputed every 2 s: wait for them)
        def reported() -> bool:
            found = samples(ops)
            lag = named(found, "chainwatch_worker_consumer_lag_records")
            return (
                value(found, "chainwatch_worker_table_keys", table="orders") == 2
                and len(lag) == 7 * settings.kafka.partitions  # 4 inputs + 3 inboxes
            )

        until("table sizes and lag of every input partition", reported, 30)
        found = samples(ops)
        records = "chainwatch_worker_records_total"
        assert value(found, records, topic=ORDERS, outcome="ok") == 2
        assert value(found, records, topic=ORDERS, outcome="dead_lettered") == 1
        assert value(found, "chainwatch_worker_dead_letters_total", reason="not_json") == 1
        published = "chainwatch_worker_alerts_published_total"
        assert (value(found, published, type="start_overdue", status="open") or 0) >= 1
        assert value(found, "chainwatch_worker_assigned_partitions", topic=ORDERS) == 4
        assert value(found, "chainwatch_worker_ready") == 1
        assert (value(found, "chainwatch_worker_fetch_records_count") or 0) >= 1
        assert sum(named(found, "chainwatch_worker_deadline_index_entries")) >= 1
        assert max(named(found, "chainwatch_worker_deadline_overdue_seconds")) < 5
        board = prometheus.build(load_plan(None))
        wanted = {n for n in prometheus.metric_names(board) if "_worker_" in n}
        assert len(wanted) >= 10
        assert wanted <= {name for name, _ in found}, wanted - {name for name, _ in found}
    finally:
        producer.close()
        consumer.close()
