"""bench/engine.py leaves no consumer group of its own on the broker it measured on."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from bench_scripts import load_bench
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from kafka_groups import group_on_broker

from chainwatch.kafka_admin import ensure_named_topics
from chainwatch.settings import Settings

pytestmark = pytest.mark.integration

bench_engine = load_bench("engine", "bench_engine_groups")


def _group_with_offsets(bootstrap: str, group: str) -> None:
    """A group as a stopped yardstick leaves it: committed offsets, no member."""
    topic = f"t-{group}"
    ensure_named_topics(bootstrap, [topic], request_timeout_s=15, partitions=1)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)})
    finally:
        consumer.close()


def test_the_yardsticks_groups_are_deleted_after_they_ran(
    settings_factory: Callable[..., Settings],
) -> None:
    """The bare and idle faust agents' groups (`<run>-bare`, `<run>-idle`) stayed on the
    broker after every bench, where `chainwatch runs list` showed them as runs."""
    settings = settings_factory()
    bootstrap = settings.kafka.bootstrap
    group = f"replay-{uuid.uuid4().hex[:8]}-bare"
    _group_with_offsets(bootstrap, group)
    known, offsets = group_on_broker(bootstrap, group)
    assert known
    assert offsets

    bench_engine.delete_group(settings, group)

    assert group_on_broker(bootstrap, group) == (False, {})
    # none there (already gone): said, not raised
    bench_engine.delete_group(settings, group)
