"""The first slice on the real stack: scans → faust stage counts, scans → ClickHouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer

from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings
from chainwatch.sink_runner import run_sink
from chainwatch.traffic import scan_events
from sinks.clickhouse.connection import open_client
from streams.topics import SCANS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 1000


def _changelog_counts(
    bootstrap: str, topic: str, expected_total: int, timeout_s: float
) -> dict[str, int]:
    """Latest value per key of a table's changelog, once the counts add up (or timeout)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    latest: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        consumer.subscribe([topic])
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    latest[json.loads(record.key)] = json.loads(record.value)
            if sum(latest.values()) >= expected_total:
                break
    finally:
        consumer.close()
    return latest


def test_thousand_scans_reach_clickhouse_and_are_counted_per_stage(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    prepare_topics(settings)
    topic = topic_names(settings)(SCANS)
    events = scan_events(seed=7)
    sent = [next(events) for _ in range(N_EVENTS)]
    expected = Counter(json.loads(value)["stage"] for _, value in sent)

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    env = {**os.environ, **settings.to_env()}
    worker = subprocess.Popen(
        [sys.executable, "-m", "chainwatch", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        stats = run_sink(settings, drain=True)
        changelog = f"{settings.engine.app_id}-stage-counts-changelog"
        counts = _changelog_counts(settings.kafka.bootstrap, changelog, N_EVENTS, timeout_s=120)
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=60)

    assert counts == dict(expected), output.decode()[-3000:]
    assert stats.rows_written == N_EVENTS

    client = open_client(settings)
    try:
        rows = client.query(
            "SELECT stage, count(), uniqExact(event_id) FROM scans GROUP BY stage"
        ).result_rows
    finally:
        client.close()
    assert {stage: n for stage, n, _ in rows} == dict(expected)
    assert all(n == distinct for _, n, distinct in rows)
