"""One topic Kafka refuses the gateway's principal (`TopicAuthorizationFailed`, an ACL
missing): that request's 503, the others published, the gateway still ready (real broker)."""

from __future__ import annotations

import httpx
import pytest
from forbidden_topic import ForbiddenTopic
from gateway_harness import gateway_settings, metric, start_gateway, token_of
from samples import fresh_order
from samples import fresh_scan as scan
from structlog.testing import capture_logs

from chainwatch.runners import prepare_topics
from streams.ingest.app import default_publisher
from streams.ingest.batch import ENDPOINTS
from streams.ingest.outage import TopicRefusals
from streams.topics import TopicNames


@pytest.mark.integration
def test_a_topic_kafka_refuses_answers_its_requests_and_leaves_the_gateway_ready(
    kafka_bootstrap: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """The refusal turned `/readyz` to 503 until the next commit, and was logged and counted
    as a Kafka outage, though Kafka answered and every other topic published: a load
    balancer pulled a gateway that served all of them."""
    settings = gateway_settings(kafka_bootstrap, readiness_interval_s=3600)
    prepare_topics(settings)
    orders = TopicNames(settings.kafka.topic_prefix)(ENDPOINTS["orders"].topic)
    publisher = ForbiddenTopic(default_publisher(settings).config, orders)
    server, url = start_gateway(settings, publisher=publisher)
    token = token_of("admin")
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/readyz").status_code == 200
            capfd.readouterr()
            for _ in range(2):
                refused = client.post("/v1/orders", json=[fresh_order()], headers=auth)
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"] == "topic_not_authorized"
                assert orders in refused.json()["detail"]
                assert "nothing was published" in refused.json()["detail"]
                assert "retry-after" in refused.headers
                assert client.get("/readyz").status_code == 200  # Kafka answers
            assert client.post("/v1/scans", json=[scan()], headers=auth).status_code == 202
        errors = "chainwatch_gateway_errors_total"
        assert metric(url, errors, endpoint="orders", error="topic_not_authorized") == 2
        assert metric(url, errors, endpoint="orders", error="kafka_unavailable") == 0
    finally:
        server.stop()
    captured = capfd.readouterr()
    log = captured.out + captured.err
    assert log.count("kafka topic not authorized") == 1, log  # once per topic and window
    assert f"topic={orders}" in log or f'"topic": "{orders}"' in log, log
    assert "] kafka unavailable " not in log, log  # no outage
    assert "readiness changed" not in log, log
    assert token not in log


def test_a_refused_topic_is_logged_once_per_topic_and_window() -> None:
    now = [0.0]
    refusals = TopicRefusals(window_s=30, clock=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(500):
            refusals.refused(["a"], "orders", "TopicAuthorizationFailedError: a")
            now[0] += 0.01
        refusals.refused(["b", "a"], "scans", "TopicAuthorizationFailedError: {'a', 'b'}")
        now[0] = 31.0
        refusals.refused(["a"], "orders", "TopicAuthorizationFailedError: a")
    lines = [(e["event"], e["log_level"], e["topic"], e["suppressed"]) for e in logs]
    assert lines == [
        ("kafka topic not authorized", "error", "a", 0),
        ("kafka topic not authorized", "error", "b", 0),
        ("kafka topic not authorized", "error", "a", 500),
    ]
