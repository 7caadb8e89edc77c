"""A live worker whose clock tick Kafka refuses for a reason other than a spent producer.

A live worker fires deadlines with ticks: a timer sends a `Tick` to the partition's
order inbox, and the step that reads it fires the deadlines that fell due (alerts,
snapshots, changelog records, all covered by the commit of the tick's offset). The tick
itself is no step's output and no offset waits for it, and a partition with a tick in
flight gets no other. Tried on the real broker (the order inbox's `max.message.bytes`
lowered under a tick, after a first alert): the refused tick was noted for the next
commit's flush only, and with no input no commit came - the worker stayed ready
(`/readyz` 200 a minute later, nothing logged) and the deadline's alert was never
published; a SIGTERM then hung its stop (the app's stop flush raised, mode skipped the
stop of the app's children: `process_stopped outcome=ok`, then the consumer's thread
kept the process alive until SIGKILL). With the broker stopped instead (35 s, the
producer's request timeout 5 s) the tick waited in aiokafka and was delivered, with the
alert, 1.5 s after the broker came back: no loss there.

Now a tick not delivered stops the worker (exit 1 within a commit interval, nothing
committed), a restarted worker fires the deadline, and a stop meanwhile logs the refusal
instead of raising it. An alert refused in the tick's step already stopped the worker
without committing the tick (pinned here too). Helpers: the worker process of
tests/engine/test_engine_spent_producer.py (its numbering hook is not triggered here).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from test_engine_spent_producer import committed_offset, hooked_worker
from worker_ops import created_order, named, records_within, samples, until

from chainwatch.free_port import free_port
from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings
from streams.engine.messages import ORDER_INBOX
from streams.topics import ALERTS, ORDERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TICK_REFUSED = "20"
"""`max.message.bytes` under any record batch: the broker refuses every tick."""

LATER_S = 10
"""When PO-LATER falls due: after the refusal is set up (the first alert is due at 2 s;
with the commit, test_engine_spent_producer's set-up of the same kind took 2.4 s)."""


def armed_in_time(placed: float) -> None:
    """The refusal is in place before PO-LATER falls due (else the test proves nothing)."""
    took = time.monotonic() - placed
    assert took < LATER_S, f"set up {took:.1f} s in: after PO-LATER fell due"


@contextmanager
def live_worker_world(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, **engine: object
) -> Iterator[tuple[Settings, Callable[[str, float], bool], KafkaProducer]]:
    """One partition (the orders' and their inbox's), topics made, an alerts reader."""
    settings = settings_factory(
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
               "partitions": 1},
        engine={"app_id": f"tick-{os.getpid()}-{time.time_ns()}", "metrics_port": free_port(),
                **engine},
    )  # fmt: skip
    prepare_topics(settings)
    alerts = KafkaConsumer(
        topic_names(settings)(ALERTS), bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest", isolation_level="read_committed",
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def alert_of(order_id: str, within_s: float) -> bool:
        return any(
            json.loads(r.value)["order_id"] == order_id for r in records_within(alerts, within_s)
        )

    try:
        yield settings, alert_of, producer
    finally:
        producer.close()
        alerts.close()


def place_due(settings: Settings, producer: KafkaProducer, due_in_s: dict[str, float]) -> None:
    """Orders whose first scan falls due `due_in_s` from now (the plan's start_within: 24 h)."""
    now = datetime.now(UTC)
    for order_id, seconds in due_in_s.items():
        placed = now + timedelta(seconds=seconds) - timedelta(hours=24)
        producer.send(
            topic_names(settings)(ORDERS), key=order_id.encode(),
            value=created_order(order_id, placed),
        )  # fmt: skip
    producer.flush()


def inbox(settings: Settings) -> str:
    return f"{settings.engine.app_id}-{ORDER_INBOX}"


def max_message_bytes(settings: Settings, topic: str, value: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": value})]
        )
    finally:
        admin.close()


def inbox_max_message_bytes(settings: Settings, value: str) -> None:
    max_message_bytes(settings, inbox(settings), value)


def test_a_live_worker_whose_tick_is_refused_stops_and_its_restart_publishes_the_alert(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    with live_worker_world(settings_factory, kafka_bootstrap) as (settings, alert_of, producer):
        orders = TopicPartition(topic_names(settings)(ORDERS), 0)
        with hooked_worker(settings, tmp_path) as worker:
            placed = time.monotonic()
            place_due(settings, producer, {"PO-SOON": 2, "PO-LATER": LATER_S})
            assert alert_of("PO-SOON", 30), "no first alert"
            until("both orders committed", lambda: committed_offset(settings, orders) == 2, 30)
            inbox_max_message_bytes(settings, TICK_REFUSED)
            armed_in_time(placed)
            # PO-LATER falls due with no input to come: its tick is refused
            said = worker.stopped_with_why(40)
        assert "tick_not_delivered" in said, said[-2000:]
        assert "MessageSizeTooLargeError" in said, said[-2000:]
        assert committed_offset(settings, orders) == 2
        inbox_max_message_bytes(settings, "1048588")  # Kafka's default
        with hooked_worker(settings, tmp_path / "again"):
            assert alert_of("PO-LATER", 60), "the restarted worker did not publish the alert"


def test_a_sigterm_after_a_refused_tick_stops_the_worker_saying_why(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The commit timer waits 60 s, so the stop is the signal's, not the refusal's."""
    with live_worker_world(
        settings_factory, kafka_bootstrap, commit_interval_s=60, stop_timeout_s=30
    ) as (settings, alert_of, producer):
        with hooked_worker(settings, tmp_path) as worker:
            place_due(settings, producer, {"PO-SOON": 2, "PO-LATER": 6})
            assert alert_of("PO-SOON", 30), "no first alert"
            inbox_max_message_bytes(settings, TICK_REFUSED)
            until("the tick refused", lambda: "tick_not_delivered" in worker.log.read_text(), 30)
            assert worker.process.poll() is None, "stopped before the signal"
            worker.process.terminate()
            said = worker.stopped_with_why(20)  # before the fix: still running, /readyz 200
        assert "producer buffer not flushed at stop" in said, said[-2000:]
        assert "process_stop_timed_out" not in said, said[-2000:]
        assert committed_offset(settings, TopicPartition(topic_names(settings)(ORDERS), 0)) is None


def test_an_alert_refused_after_a_tick_stops_the_worker_with_the_tick_not_committed(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The tick's step fires the deadline; its alert is refused (the alerts topic's
    `max.message.bytes`); the commit of the tick's offset raises, and the stop's commit
    after that crash must not pass the tick either (its flush has nothing left to fail)."""
    with live_worker_world(settings_factory, kafka_bootstrap) as (settings, alert_of, producer):
        orders = TopicPartition(topic_names(settings)(ORDERS), 0)
        ticks = TopicPartition(inbox(settings), 0)
        with hooked_worker(settings, tmp_path) as worker:
            placed = time.monotonic()
            place_due(settings, producer, {"PO-SOON": 2, "PO-LATER": LATER_S})
            assert alert_of("PO-SOON", 30), "no first alert"
            until("both orders committed", lambda: committed_offset(settings, orders) == 2, 30)
            max_message_bytes(settings, topic_names(settings)(ALERTS), TICK_REFUSED)
            armed_in_time(placed)
            said = worker.stopped_with_why(40)
        assert "MessageSizeTooLargeError" in said, said[-2000:]
        assert "tick_not_delivered" not in said, said[-2000:]  # the tick was, its alert not
        reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
        try:
            end = reader.end_offsets([ticks])[ticks]  # PO-LATER's tick is the last record
        finally:
            reader.close()
        assert (committed_offset(settings, ticks) or 0) < end, "committed past the tick"


def test_a_sigterm_after_a_refused_step_output_exits_non_zero_and_commits_nothing_past_it(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An ordinary step's output refused (an overdue order's alert: the alerts topic's
    `max.message.bytes` lowered), then a SIGTERM before the commit timer's next commit
    (60 s here; about 1 s in the field). The stop's first commit raised the refusal,
    logged and forgotten; its next commit passed the step's input and the worker exited
    0: a supervisor saw a clean stop, and nothing would send the alert again."""
    with live_worker_world(
        settings_factory, kafka_bootstrap, commit_interval_s=60, stop_timeout_s=30
    ) as (settings, alert_of, producer):
        names = topic_names(settings)
        inputs = [TopicPartition(names(ORDERS), 0), TopicPartition(inbox(settings), 0)]
        with hooked_worker(settings, tmp_path) as worker:
            max_message_bytes(settings, names(ALERTS), TICK_REFUSED)
            place_due(settings, producer, {"PO-OVERDUE": -60})

            def alerted() -> bool:  # counted as the step collects it, before its delivery
                return (
                    sum(named(samples(worker.ops), "chainwatch_worker_alerts_published_total")) > 0
                )

            until("the alert's step ran", alerted, 30)
            assert worker.process.poll() is None, "stopped before the signal"
            worker.process.terminate()
            said = worker.stopped_with_why(30)  # before the fix: exit 0
        assert "worker_stopped_with_a_delivery_refused" in said, said[-2000:]
        assert "MessageSizeTooLargeError" in said, said[-2000:]
        assert [committed_offset(settings, tp) for tp in inputs] == [None, None]
        max_message_bytes(settings, names(ALERTS), "1048588")  # Kafka's default
        with hooked_worker(settings, tmp_path / "again"):
            assert alert_of("PO-OVERDUE", 60), "the restarted worker did not publish the alert"
