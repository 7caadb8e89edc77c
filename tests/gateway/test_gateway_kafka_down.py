"""Kafka unavailable: 503 + Retry-After, not ready, and nothing half-published."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from conftest import gateway_settings, read_committed, start_gateway, token_of
from gateway_samples import scan

from chainwatch.runners import prepare_topics
from streams.ingest.app import default_publisher
from streams.ingest.publisher import OutRecord, PublisherConfig, TransactionalPublisher

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerLostBeforeCommit(TransactionalPublisher):
    """Every record is acknowledged by the real broker, then the commit never happens."""

    async def _acknowledged(self, records: Sequence[OutRecord]) -> None:
        raise KafkaConnectionError("broker went away before the commit")


def test_unreachable_kafka_is_503_with_retry_after_and_not_ready() -> None:
    settings = gateway_settings(f"127.0.0.1:{_closed_port()}", retry_after_s=7)
    server, url = start_gateway(settings)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post(
                "/v1/scans",
                json=[scan()],
                headers={"Authorization": f"Bearer {token_of('admin')}"},
            )
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "7"
            assert response.json()["error"] == "kafka_unavailable"
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
    finally:
        server.stop()


def test_a_failure_after_the_acks_leaves_nothing_visible_to_committed_readers(
    kafka_bootstrap: str,
) -> None:
    settings = gateway_settings(kafka_bootstrap)
    prepare_topics(settings)
    config = default_publisher(settings).config
    faulty = BrokerLostBeforeCommit(config)
    server, url = start_gateway(settings, publisher=faulty)
    batch = [scan() for _ in range(20)]
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post(
                "/v1/scans", json=batch, headers={"Authorization": f"Bearer {token_of('admin')}"}
            )
        assert response.status_code == 503, response.text
        assert "retry-after" in response.headers
    finally:
        server.stop()

    topic = settings.kafka.topic_prefix + "scans"
    uncommitted = read_committed(kafka_bootstrap, topic, isolation="read_uncommitted")
    assert len(uncommitted) == 20  # the records reached the log ...
    assert read_committed(kafka_bootstrap, topic) == []  # ... but were aborted

    # A healthy gateway with the same transactional ids fences the old producers and works.
    server, url = start_gateway(settings, publisher=TransactionalPublisher(config))
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            again = client.post(
                "/v1/scans", json=batch, headers={"Authorization": f"Bearer {token_of('admin')}"}
            )
        assert again.status_code == 202, again.text
    finally:
        server.stop()
    committed = [json.loads(v) for _, v in read_committed(kafka_bootstrap, topic) if v]
    assert committed == batch or sorted(c["event_id"] for c in committed) == sorted(
        b["event_id"] for b in batch
    )


def test_pool_config_is_taken_from_settings() -> None:
    settings = gateway_settings("127.0.0.1:1", producers=3, publish_timeout_s=2.5)
    config = default_publisher(settings).config
    assert config == PublisherConfig(
        bootstrap="127.0.0.1:1",
        transactional_id=settings.gateway.transactional_id or "",
        pool_size=3,
        publish_timeout_s=2.5,
    )
