"""A worker restarted with another SLA plan re-judges its open orders at once.

Each order's stored state names the plan it was derived under (`SlaPlan.fingerprint`);
recovery fires the orders judged by another plan at the first deadline check. Before,
they kept the old plan's next deadline: a stage or start budget made shorter raised
its alert only at the order's next record or at the old deadline, hours later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer
from worker_ops import created_order, get, records_within, until

import schemas.plan
from chainwatch.free_port import free_port
from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings, child_environment
from schemas.common import format_utc
from streams.topics import ALERTS, ORDER_STATE, ORDERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the worker has its own copy of the descriptor
        worker = subprocess.Popen(
            [sys.executable, "-m", "chainwatch", "worker"],
            env=child_environment(settings, os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ops = f"http://127.0.0.1:{settings.engine.metrics_port}"
    until("the worker is ready", lambda: get(f"{ops}/readyz")[0] == 200, 120)
    return worker


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    assert worker.wait(timeout=60) == 0


def test_a_worker_restarted_with_a_shorter_budget_raises_the_alert_without_new_input(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    shipped = Path(schemas.plan.__file__).parent / "plans" / "knitwear.yaml"
    tighter = tmp_path / "tighter.yaml"
    tighter.write_text(
        yaml.safe_dump({**yaml.safe_load(shipped.read_text()), "start_within": "1h"})
    )
    settings = settings_factory(
        engine={"app_id": f"plan-{os.getpid()}-{time.time_ns()}", "metrics_port": free_port()}
    )
    prepare_topics(settings)
    names = topic_names(settings)
    log = tmp_path / "worker.log"
    consumer = KafkaConsumer(
        names(ALERTS), names(ORDER_STATE),
        bootstrap_servers=settings.kafka.bootstrap, auto_offset_reset="earliest",
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    # placed 2 h ago: its first scan is due in 22 h by the shipped plan, 1 h ago by the new
    placed_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    try:
        worker = _start(settings, log)
        try:
            producer.send(names(ORDERS), key=b"PO-PLAN", value=created_order("PO-PLAN", placed_at))
            producer.flush()
            assert any(r.key == b"PO-PLAN" for r in records_within(consumer, 60)), "no snapshot"
        finally:
            _stop(worker)

        replanned = settings.model_copy(
            update={"engine": settings.engine.model_copy(update={"plan": tighter})}
        )
        worker = _start(replanned, log)
        try:
            fired = None
            for record in records_within(consumer, 60):  # nothing is sent: recovery must do it
                if record.topic == names(ALERTS):
                    alert = json.loads(record.value)
                    if alert["order_id"] == "PO-PLAN" and alert["type"] == "start_overdue":
                        fired = alert
                        break
            assert fired is not None, log.read_text()[-3000:]
            assert fired["status"] == "open"
            assert fired["deadline"] == format_utc(placed_at + timedelta(hours=1))
        finally:
            _stop(worker)
        assert "replanned=1" in log.read_text()  # the restarted worker's recovery found it
    finally:
        producer.close()
        consumer.close()
