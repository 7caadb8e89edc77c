"""`chainwatch simulate --kafka` against the real broker: topics, keys, bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import islice

import pytest
from kafka import KafkaConsumer

from chainwatch.settings import Settings, child_environment
from simulator import SimConfig, simulate
from streams.topics import INPUT_TOPICS, TopicNames

pytestmark = pytest.mark.integration

N = 400
KEY_FIELD = {
    "orders": "order_id",
    "scans": "order_id",
    "unit-status": "unit_id",
    "crm.customers": "customer_id",
}


def consume(
    settings: Settings, expected: int, timeout_s: float
) -> list[tuple[str, bytes | None, bytes | None]]:
    names = TopicNames(settings.kafka.topic_prefix)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    got: list[tuple[str, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout_s
    try:
        consumer.subscribe([names(t) for t in INPUT_TOPICS])
        while len(got) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend((names.strip(r.topic), r.key, r.value) for r in batch)
    finally:
        consumer.close()
    return got


def test_simulate_streams_to_kafka_with_contract_keys(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    args = [
        sys.executable, "-m", "chainwatch", "simulate", "--kafka", "--seed", "6",
        "--max-events", str(N), "--rate", "2000", "--invalid-share", "0.1", "--summary",
        "--start", "2027-03-01T00:00:00Z",
    ]  # fmt: skip
    done = subprocess.run(
        args,
        env=child_environment(settings, os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"simulate: {N} records" in done.stderr
    # client-library logs (fresh topics: leader elections, retries) go to simulate.log
    for noise in ("NotLeaderForPartition", "UNKNOWN_TOPIC", "WARNING", "warning", "Traceback"):
        assert noise not in done.stderr, done.stderr[-2000:]

    got = consume(settings, N, timeout_s=60)
    expected = list(islice(simulate(SimConfig(seed=6, invalid_share=0.1, days=None)), N))
    assert len(got) == N
    # per topic (and so per key) the order is the publication order
    for topic in INPUT_TOPICS:
        sent = [(r.key_bytes(), r.value_bytes()) for r in expected if r.topic == topic]
        received = [(key, value) for t, key, value in got if t == topic]
        assert sorted(received, key=repr) == sorted(sent, key=repr), topic
    malformed = [r for r in expected if r.cut is not None]
    assert malformed, "the run should include truncated values"
    for record in expected:
        if record.valid and record.value is not None:
            assert f'"{KEY_FIELD[record.topic]}":"{record.key}"' in record.value
