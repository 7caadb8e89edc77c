"""A rebuilt Kafka in front of a kept ClickHouse: detected, refused, then a new epoch (M14)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from kafka.errors import KafkaError
from samples import scan_json
from sink_harness import prepare_all_topics, publish, wait_for
from sink_samples import make_alert

from chainwatch.kafka_admin import admin_client, kafka_identities
from chainwatch.runners import topic_names
from chainwatch.settings import Settings
from chainwatch.sink_runner import build_mappers, run_sink
from schemas.alerts import AlertStatus
from sinks.clickhouse.connection import open_client
from sinks.clickhouse.kafka_source import NEW_EPOCH_HINT, KafkaChanged
from streams.topics import ALERTS, SCANS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _publish(settings: Settings, scans: range, status: AlertStatus) -> None:
    publish(settings, SCANS, ((f"PO-{i % 50}".encode(), scan_json(i)) for i in scans))
    alerts = [make_alert(n, status) for n in range(6)]
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))


def _rebuild_kafka(settings: Settings) -> None:
    """Delete and re-create every topic the sink reads: new topic ids, offsets from 0."""
    topics = list(build_mappers(settings))
    before = kafka_identities(settings.kafka.bootstrap, topics, request_timeout_s=15)
    admin = admin_client(settings.kafka.bootstrap, request_timeout_s=15)
    try:
        admin.delete_topics(topics, timeout_ms=30000)
        wait_for(lambda: not set(topics) & set(admin.list_topics()), 60, "the topics to be deleted")
    finally:
        admin.close()

    def recreated() -> bool:
        with contextlib.suppress(KafkaError):
            prepare_all_topics(settings)
        now = kafka_identities(settings.kafka.bootstrap, topics, request_timeout_s=15)
        return set(now) == set(topics) and all(now[t] != before[t] for t in topics)

    wait_for(recreated, 60, "the topics to be created again", interval_s=0.5)


def _rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    client = open_client(settings)
    try:
        return [tuple(r) for r in client.query(sql).result_rows]
    finally:
        client.close()


def test_a_rebuilt_kafka_is_refused_then_a_new_epoch_stores_its_records_after_the_old_ones(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)
    _publish(settings, range(10), AlertStatus.OPEN)
    assert run_sink(settings, drain=True).rows_written == 16

    _rebuild_kafka(settings)
    rebuilt = settings.model_copy(
        update={"engine": settings.engine.model_copy(update={"app_id": "rebuilt"})}
    )  # a rebuilt Kafka has no consumer groups either
    _publish(rebuilt, range(100, 110), AlertStatus.RESOLVED)

    with pytest.raises(KafkaChanged) as refused:
        run_sink(rebuilt, drain=True)
    message = str(refused.value)
    assert NEW_EPOCH_HINT in message
    assert topic_names(settings)(SCANS) in message
    assert _rows(settings, "SELECT count() FROM scans") == [(10,)]

    stats = run_sink(rebuilt, drain=True, new_kafka_epoch=True)
    assert stats.skipped_already_stored == 0
    assert _rows(settings, "SELECT count(), uniqExact(event_id) FROM scans") == [(20, 20)]
    statuses = _rows(settings, "SELECT status, count() FROM alerts_current GROUP BY status")
    assert statuses == [("resolved", 6)]  # every new version wins over every old one

    # and the epoch holds across restarts: nothing is stored twice, nothing refused
    _publish(rebuilt, range(200, 205), AlertStatus.RESOLVED)
    again = run_sink(rebuilt, drain=True)
    assert again.rows_written == 11
    assert _rows(settings, "SELECT count(), uniqExact(event_id) FROM scans") == [(25, 25)]
