"""The topics a worker creates before faust starts (`chainwatch.runners.create_worker_topics`).

A topic the worker subscribes to that appears only after its consumer read the
cluster's metadata is found at the next metadata refresh, five minutes later,
and the group rebalances then (the worker recovers its tables again). faust's
leader topic was such a topic until the worker created it itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from chainwatch.doctor import timestamp_check, timestamps
from chainwatch.kafka_admin import admin_client, create_missing_topics
from chainwatch.runners import create_worker_topics, leader_topic, worker_app
from chainwatch.settings import Settings
from streams.engine.messages import INTERNAL_TOPICS, ORDER_INBOX
from streams.topics import CUSTOMERS, INPUT_TOPICS, ORDERS, SCANS, UNIT_STATUS


def test_a_worker_creates_fausts_leader_topic_with_its_one_partition_before_faust_starts(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    app, _engine = worker_app(settings)
    assert leader_topic(app) == app._leader_assignor._leader_topic_name  # what faust subscribes to
    create_worker_topics(app, settings, INTERNAL_TOPICS)
    admin = admin_client(settings.kafka.bootstrap, request_timeout_s=15)
    try:
        inbox = f"{settings.engine.app_id}-{ORDER_INBOX}"
        described = {
            topic["name"]: len(topic["partitions"])
            for topic in admin.describe_topics(
                [leader_topic(app), inbox, settings.kafka.topic("scans")]
            )
        }
    finally:
        admin.close()
    assert described == {
        leader_topic(app): 1,
        inbox: settings.kafka.partitions,
        settings.kafka.topic("scans"): settings.kafka.partitions,
    }


def test_a_worker_makes_scans_and_orders_take_the_brokers_time(
    settings_factory: Callable[..., Settings],
) -> None:
    """A held live clock reads scans' and orders' Kafka timestamps (docs/rules.md, The clock):
    a producer's own timestamp, however far off, must not become one."""
    settings = settings_factory()
    app, _engine = worker_app(settings)
    create_worker_topics(app, settings, INTERNAL_TOPICS)
    kafka = settings.kafka
    assert _timestamp_types(kafka.bootstrap, [kafka.topic(t) for t in INPUT_TOPICS]) == {
        kafka.topic(SCANS): "LogAppendTime",
        kafka.topic(ORDERS): "LogAppendTime",
        kafka.topic(UNIT_STATUS): "CreateTime",
        kafka.topic(CUSTOMERS): "CreateTime",
    }
    sent_at_ms = int(time.time() * 1000)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, request_timeout_ms=15000)
    try:
        producer.send(kafka.topic(SCANS), b"{}", key=b"o", timestamp_ms=1_000).get(timeout=30)
    finally:
        producer.close(timeout=10)
    consumer = KafkaConsumer(
        kafka.topic(SCANS),
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    try:
        record = next(iter(consumer))
    finally:
        consumer.close()
    assert record.timestamp >= sent_at_ms - 60_000  # the broker's time, not the 1 s sent

    check = timestamps(settings)
    assert (check.ok, check.warning) == (True, False), check.detail


def test_doctor_warns_of_scans_or_orders_that_keep_their_producers_time(
    settings_factory: Callable[..., Settings],
) -> None:
    """Topics made before (or by hand) keep `CreateTime`: doctor says how to set the broker's."""
    settings = settings_factory()
    kafka = settings.kafka
    create_missing_topics(
        kafka.bootstrap, {kafka.topic(SCANS): {}}, request_timeout_s=15, partitions=1
    )
    check = timestamps(settings)
    assert (check.ok, check.warning) == (True, True)
    assert f"{kafka.topic(SCANS)} keep their producers' timestamps (CreateTime)" in check.detail
    assert f"--entity-name {kafka.topic(SCANS)} --add-config " in check.detail
    assert kafka.topic(ORDERS) not in check.detail  # not made yet: the worker makes it right


def test_the_timestamp_verdict_names_only_topics_that_exist_with_the_producers_time() -> None:
    fresh = timestamp_check({}, "b:9092")  # neither made yet
    assert (fresh.ok, fresh.warning) == (True, False)
    unread = timestamp_check({"p.orders": "LogAppendTime", "p.scans": None}, "b:9092")
    assert (unread.ok, unread.warning) == (True, True)
    assert "cannot read message.timestamp.type of p.scans" in unread.detail
    assert "kafka-configs.sh" not in unread.detail  # no fix for what is not known wrong
    right = timestamp_check({"p.orders": "LogAppendTime", "p.scans": "LogAppendTime"}, "b:9092")
    assert (right.ok, right.warning) == (True, False)
    mixed = timestamp_check({"p.orders": "LogAppendTime", "p.scans": "CreateTime"}, "b:9092")
    assert (mixed.ok, mixed.warning) == (True, True)
    assert "p.scans keep their producers' timestamps" in mixed.detail
    assert "--entity-name p.orders" not in mixed.detail


def _timestamp_types(bootstrap: str, names: list[str]) -> dict[str, str]:
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names],
            config_filter="all",
        )
    finally:
        admin.close()
    return {
        name: configs["message.timestamp.type"]["value"]
        for name, configs in described["topic"].items()
    }
