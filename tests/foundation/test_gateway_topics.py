"""The gateway's background topic preparation (chainwatch.gateway_topics), without Kafka:
tried again with back-off until it succeeds, each attempt bounded, stopped by a cancel."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from kafka.errors import InvalidReplicationFactorError
from structlog.testing import capture_logs

from chainwatch.gateway_topics import TopicsInBackground
from chainwatch.kafka_admin import KafkaUnreachable, refusal
from sinks.backoff import Backoff


def fast() -> Backoff:
    return Backoff(initial_s=0.01, max_s=0.02)


def test_it_waits_for_kafka_until_an_attempt_prepares_the_topics() -> None:
    attempts: list[str] = []
    seen_waiting: list[str | None] = []

    def prepare() -> None:
        attempts.append(threading.current_thread().name)
        seen_waiting.append(topics.waiting_for())
        if len(attempts) < 3:
            raise KafkaUnreachable("cannot reach Kafka at 127.0.0.1:9 (KafkaConnectionError)")
        if len(attempts) == 3:
            raise RuntimeError("InvalidReplicationFactorError")

    topics = TopicsInBackground(prepare, "127.0.0.1:9", backoff=fast())
    assert topics.waiting_for() == "Kafka at 127.0.0.1:9"
    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(topics.run(), 30))
    assert topics.waiting_for() is None
    assert seen_waiting == ["Kafka at 127.0.0.1:9"] * 4
    assert attempts == ["gateway-topics"] * 4  # off the event loop's thread
    events = [(e["event"], e.get("attempt")) for e in logs]
    assert events == [
        ("kafka.unreachable", 1),
        ("kafka.unreachable", 2),
        ("kafka.topics_not_prepared", 3),  # any failure is tried again, and named
        ("kafka.topics_prepared", None),
    ]
    assert "InvalidReplicationFactorError" in logs[2]["error"]
    assert logs[3]["attempts"] == 4


def test_a_refusal_trying_again_cannot_change_is_an_error_retried_at_the_longest_pause() -> None:
    """A replication factor above the broker count: the worker exits 1 on it; the
    gateway said it as one more `topics_not_prepared` warning, every second at first."""
    attempts: list[int] = []

    def prepare() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise refusal(InvalidReplicationFactorError("3 larger than 1"), "to create topics")

    topics = TopicsInBackground(prepare, "k:9092", backoff=Backoff(initial_s=0.01, max_s=0.3))
    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(topics.run(), 30))
    assert topics.waiting_for() is None
    refused = logs[0]
    assert (refused["event"], refused["log_level"]) == ("kafka.topics_refused", "error")
    assert "3 larger than 1" in refused["error"]
    assert "CHAINWATCH_KAFKA__REPLICATION_FACTOR" in refused["error"]
    assert refused["retry_in_s"] == 0.3  # the longest pause, not the first (0.01)
    assert logs[1]["event"] == "kafka.topics_prepared"


def test_an_attempt_that_hangs_is_given_up_at_its_deadline_and_tried_again() -> None:
    release = threading.Event()
    calls: list[int] = []

    def prepare() -> None:
        calls.append(1)
        if len(calls) == 1:
            release.wait(60)  # a client stuck beyond its own timeouts

    topics = TopicsInBackground(prepare, "k:9092", backoff=fast(), attempt_deadline_s=0.3)
    started = time.monotonic()
    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(topics.run(), 30))
    release.set()
    assert time.monotonic() - started < 10
    assert topics.waiting_for() is None
    assert logs[0]["event"] == "kafka.unreachable"
    assert logs[0]["error"] == "no answer within 0.3 s"


def test_a_shutdown_cancels_it_mid_attempt_without_waiting_for_the_attempt() -> None:
    entered = threading.Event()
    release = threading.Event()

    def prepare() -> None:
        entered.set()
        release.wait(60)

    topics = TopicsInBackground(prepare, "k:9092", backoff=fast())

    async def serve_then_stop() -> None:
        task = asyncio.create_task(topics.run())
        assert await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(serve_then_stop(), 30))
    assert time.monotonic() - started < 10
    assert topics.waiting_for() == "Kafka at k:9092"
    release.set()  # the abandoned daemon thread ends; its answer finds no one waiting
