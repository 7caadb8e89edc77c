"""Live mode: a deadline produces its alert within 1 s even when no input arrives."""

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

from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings
from schemas.common import format_utc
from streams.topics import ALERTS, ORDER_STATE, ORDERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _order(order_id: str, placed_at: datetime) -> bytes:
    return json.dumps(
        {
            "op": "created", "order_id": order_id, "customer_id": "C-1", "product": "crewneck",
            "quantity": 10, "placed_at": format_utc(placed_at),
            "due_at": format_utc(placed_at + timedelta(days=20)),
        }
    ).encode()  # fmt: skip


def _records(consumer: KafkaConsumer, timeout_s: float) -> Iterator[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            yield from batch


@pytest.fixture
def live_worker(settings_factory: Callable[..., Settings]) -> Iterator[Settings]:
    settings = settings_factory(engine={"app_id": f"live-{os.getpid()}-{time.time_ns()}"})
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
    consumer = KafkaConsumer(
        names(ALERTS), names(ORDER_STATE),
        bootstrap_servers=settings.kafka.bootstrap, auto_offset_reset="earliest",
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    try:
        # 1. the worker is up once it has answered a first order with a snapshot
        producer.send(names(ORDERS), key=b"PO-WARM", value=_order("PO-WARM", datetime.now(UTC)))
        producer.flush()
        assert any(r.key == b"PO-WARM" for r in _records(consumer, 120)), "worker never answered"

        # 2. an order whose first scan is due in 3 s; nothing else is ever sent
        deadline = datetime.now(UTC) + timedelta(seconds=3)
        placed_at = deadline - timedelta(hours=24)  # the plan's start_within
        producer.send(names(ORDERS), key=b"PO-LIVE", value=_order("PO-LIVE", placed_at))
        producer.flush()

        fired: Any = None
        for record in _records(consumer, 30):
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
    finally:
        producer.close()
        consumer.close()
