"""`chainwatch gateway` started before Kafka serves, not ready, and becomes ready when
Kafka comes (chainwatch.gateway_topics): it exited 1 before, and a supervisor's
growing restart delay could keep it down minutes after Kafka was back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from conftest import running_gateway_process, token_of
from dead_servers import LateServer
from kafka import KafkaAdminClient
from samples import fresh_scan

from streams.topics import TopicNames


def _post_scan(base_url: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/scans",
        json=[fresh_scan()],
        headers={"Authorization": f"Bearer {token_of('admin')}"},
        timeout=30,
    )


@pytest.mark.integration
def test_a_gateway_started_before_kafka_serves_not_ready_then_prepares_its_topics(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    kafka = LateServer(kafka_bootstrap)
    try:
        with running_gateway_process(kafka.address, tmp_path, probe="healthz") as gw:
            waiting = f"Kafka at {kafka.address}"
            assert httpx.get(f"{gw.base_url}/healthz", timeout=10).json() == {
                "status": "ok",
                "waiting_for": waiting,
            }
            ready = httpx.get(f"{gw.base_url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["waiting_for"] == waiting
            assert "Retry-After" in ready.headers
            refused = _post_scan(gw.base_url)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "kafka_unavailable"
            assert "waiting for Kafka at" in refused.json()["detail"]
            assert "Retry-After" in refused.headers
            deadline = time.monotonic() + 60
            while "kafka.unreachable" not in (tmp_path / "gateway.log").read_text():
                assert time.monotonic() < deadline, "no kafka.unreachable warning"
                time.sleep(0.2)  # polling a condition, with a deadline

            kafka.open()
            deadline = time.monotonic() + 120  # the back-off's next attempt, then its own
            while httpx.get(f"{gw.base_url}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
                time.sleep(0.2)  # polling a condition, with a deadline

            assert httpx.get(f"{gw.base_url}/healthz", timeout=10).json() == {"status": "ok"}
            accepted = _post_scan(gw.base_url)
            assert accepted.status_code == 202, accepted.text
            topic = TopicNames(gw.settings.kafka.topic_prefix)("scans")
            admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10000)
            try:
                (described,) = admin.describe_topics([topic])
            finally:
                admin.close()
            # prepared by the gateway with the configured count, not auto-created
            assert len(described["partitions"]) == gw.settings.kafka.partitions
        log = (tmp_path / "gateway.log").read_text()
        # served at once: the banner comes first, kafka-python's connection errors never
        assert log.startswith("gateway on http://"), log
        assert f"cannot reach Kafka at {kafka.address}" in log
        assert "[kafka." not in log  # kafka-python's own lines (logger kafka.conn, ...)
        assert "Traceback" not in log
        assert gw.process.returncode == 0, log
    finally:
        kafka.close()
