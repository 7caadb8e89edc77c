"""The topics a worker creates before faust starts (`chainwatch.runners.create_worker_topics`).

A topic the worker subscribes to that appears only after its consumer read the
cluster's metadata is found at the next metadata refresh, five minutes later,
and the group rebalances then (the worker recovers its tables again). faust's
leader topic was such a topic until the worker created it itself.
"""

from __future__ import annotations

from collections.abc import Callable

from chainwatch.kafka_admin import admin_client
from chainwatch.runners import create_worker_topics, leader_topic, worker_app
from chainwatch.settings import Settings
from streams.engine.messages import INTERNAL_TOPICS, ORDER_INBOX


def test_a_worker_creates_fausts_leader_topic_with_its_one_partition_before_faust_starts(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    app, _engine = worker_app(settings)
    assert leader_topic(app) == app._leader_assignor._leader_topic_name  # what faust subscribes to
    create_worker_topics(app, settings, INTERNAL_TOPICS)
    admin = admin_client(settings.kafka.bootstrap)
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
