"""A worker whose producer's batch numbering the broker refuses.

An idempotent producer numbers its batches per partition; after a broker restart with a
batch in flight the broker may refuse the numbering (OUT_OF_ORDER_SEQUENCE_NUMBER), and
aiokafka keeps it, so every later batch of that producer to the partition is refused the
same, for ever (the notifier wedged so: tests/sinks/test_webhook_log_producer.py). The
worker's one producer (faust's, `streams.kafka_transport._IdempotentProducer`) carries
the engine's outputs and table changelog records (`OutputSender`). Here a real worker
(`chainwatch worker`'s `run_worker`, in its own process) on the real broker has its
producer's own sequence moved ahead once it has answered a first order (what the
broker's lost state looks like from the producer's side), then gets a second record of
that order. It must not go on ready while nothing it sends is taken: it stops with an
error that says why (a supervisor restarts it, with a new producer id), its input not
committed past the refused outputs.

The second case has no input after the refusal: a live worker's deadline falls due
(a tick's alert, snapshot and changelog record, no step, no offset to commit). The
refusal was noted for the next commit's flush only, and with no input no commit came:
the worker stayed ready, the alert never published, for as long as no record arrived.
Now a delivery the broker refuses as a spent producer's stops the worker at once, and a
restarted worker publishes the alert.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_ops import created_order, get, records_within, until

from chainwatch.free_port import free_port
from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings, child_environment
from schemas.common import format_utc
from streams.topics import ALERTS, ORDER_STATE, ORDERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = """
import asyncio, json, sys
from pathlib import Path
from chainwatch import runners
from chainwatch.logs import configure_logging
from chainwatch.settings import Settings

trigger, moved = Path(sys.argv[1]), Path(sys.argv[2])
configure_logging("info", "json")
worker_app = runners.worker_app

def with_numbering_moved(settings):
    app, engine = worker_app(settings)

    @app.task
    async def numbering_moved_ahead() -> None:
        while not trigger.exists():  # the test says when
            await asyncio.sleep(0.05)
        producer = app.producer._ensure_producer()
        sequences = producer._txn_manager._sequence_numbers
        for tp in list(sequences):  # the broker now expects an earlier sequence
            sequences[tp] += 7
        moved.write_text(json.dumps(sorted(f"{tp.topic}[{tp.partition}]" for tp in sequences)))

    return app, engine

runners.worker_app = with_numbering_moved
runners.run_worker(Settings())
"""


def updated_order(order_id: str) -> bytes:
    return json.dumps(
        {"op": "updated", "order_id": order_id, "event_time": format_utc(datetime.now(UTC)),
         "quantity": 12}
    ).encode()  # fmt: skip


def committed_offset(settings: Settings, tp: TopicPartition) -> int | None:
    """The worker group's committed offset of `tp` (None: none)."""
    group = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=settings.engine.app_id,
        enable_auto_commit=False,
    )  # fmt: skip
    try:
        offset: int | None = group.committed(tp)
        return offset
    finally:
        group.close()


class HookedWorker:
    """A worker in its own process whose producer's numbering the test moves ahead."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.ops = f"http://127.0.0.1:{settings.engine.metrics_port}"
        self.trigger, self.moved = tmp_path / "move", tmp_path / "moved"
        self.log = tmp_path / "worker.log"
        tmp_path.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(self.trigger), str(self.moved)],
                env=child_environment(settings, os.environ), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def move_numbering(self) -> list[str]:
        """Move the producer's sequence ahead on every partition it has sent to; those."""
        self.trigger.touch()
        until("the numbering moved", self.moved.exists, 30)
        moved: list[str] = json.loads(self.moved.read_text())
        return moved

    def stopped_with_why(self, within_s: float) -> str:
        """Wait for the process to exit (not 0) and return its log; fail if it runs on,
        with whether it still said ready."""
        deadline = time.monotonic() + within_s
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # polling interval of a condition with a deadline
        said = self.log.read_text()
        if self.process.poll() is None:
            ready = get(f"{self.ops}/readyz")
            raise AssertionError(
                f"the worker still runs {within_s} s after it should have stopped, /readyz"
                f" {ready}:\n{said[-2000:]}"
            )
        assert self.process.returncode != 0, said[-2000:]
        return said

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # its stop hung (before the fix: a raise in it)
                self.process.kill()
                self.process.wait(timeout=10)
                raise


@contextmanager
def hooked_worker(settings: Settings, tmp_path: Path) -> Iterator[HookedWorker]:
    worker = HookedWorker(settings, tmp_path)
    try:
        until("the worker is ready", lambda: get(f"{worker.ops}/readyz")[0] == 200, 120)
        yield worker
    finally:
        worker.stop()


def test_a_worker_whose_numbering_is_refused_stops_not_ready_and_commits_nothing_past_it(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(
        engine={"app_id": f"spent-{os.getpid()}-{time.time_ns()}", "metrics_port": free_port()}
    )
    prepare_topics(settings)
    names = topic_names(settings)
    consumer = KafkaConsumer(
        names(ORDER_STATE), bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest", isolation_level="read_committed",
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    try:
        with hooked_worker(settings, tmp_path) as worker:
            order = created_order("PO-1", datetime.now(UTC))
            first = producer.send(names(ORDERS), key=b"PO-1", value=order).get(30)
            assert any(r.key == b"PO-1" for r in records_within(consumer, 60)), "no answer"
            tp = TopicPartition(names(ORDERS), first.partition)
            until("its input committed", lambda: committed_offset(settings, tp) == 1, 30)

            assert f"{names(ORDER_STATE)}[{first.partition}]" in worker.move_numbering()
            second = producer.send(names(ORDERS), key=b"PO-1", value=updated_order("PO-1"))
            said = worker.stopped_with_why(60)
        assert "ProducerFlushError" in said, said[-2000:]
        assert "OutOfOrderSequenceNumber" in said, said[-2000:]
        assert committed_offset(settings, tp) == second.get(30).offset == 1
    finally:
        producer.close()
        consumer.close()


LATER_S = 10
"""When the second order of the live case falls due: after the numbering is moved."""


def test_a_live_worker_whose_numbering_is_refused_with_no_input_stops_not_ready(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    """One partition, so the alert of the deadline that falls due after the refusal goes
    where the producer has sent an alert before (a partition it never sent to would
    take a first batch's number: the alert then passes, and only the snapshot and the
    table changelog record are refused)."""
    settings = settings_factory(
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
               "partitions": 1},
        engine={"app_id": f"spent-live-{os.getpid()}-{time.time_ns()}",
                "metrics_port": free_port()},
    )  # fmt: skip
    prepare_topics(settings)
    names = topic_names(settings)
    alerts = KafkaConsumer(
        names(ALERTS), bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest", isolation_level="read_committed",
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")

    def alert_of(order_id: str, within_s: float) -> bool:
        return any(
            json.loads(r.value)["order_id"] == order_id for r in records_within(alerts, within_s)
        )

    try:
        with hooked_worker(settings, tmp_path) as worker:
            now = datetime.now(UTC)
            start_within = timedelta(hours=24)  # the plan's: the first scan is due then
            # PO-LATER's 10 s: the first alert, the commit and the move take about 2.4 s
            for order_id, due_in_s in (("PO-SOON", 2), ("PO-LATER", LATER_S)):
                placed = now + timedelta(seconds=due_in_s) - start_within
                producer.send(
                    names(ORDERS), key=order_id.encode(), value=created_order(order_id, placed)
                )
            producer.flush()
            assert alert_of("PO-SOON", 30), "no first alert"
            tp = TopicPartition(names(ORDERS), 0)
            until("both orders committed", lambda: committed_offset(settings, tp) == 2, 30)

            assert f"{names(ALERTS)}[0]" in worker.move_numbering()
            moved_after = (datetime.now(UTC) - now).total_seconds()
            assert moved_after < LATER_S, f"moved {moved_after:.1f} s in: after PO-LATER fell due"
            # PO-LATER falls due with no input to come: its alert is refused
            said = worker.stopped_with_why(30)
        assert "OutOfOrderSequenceNumber" in said, said[-2000:]
        assert committed_offset(settings, tp) == 2
        with hooked_worker(settings, tmp_path / "again") as _restarted:  # a new producer id
            assert alert_of("PO-LATER", 60), "the restarted worker did not publish the alert"
    finally:
        producer.close()
        alerts.close()
