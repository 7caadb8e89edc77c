"""A publish the gateway itself fails (its fault or a library's, or a group that gave no
answer by the safety net's time) is 503 `publish_failed`, not Kafka's `kafka_unavailable`:
readiness and the outage log are left alone (real broker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from gateway_harness import gateway_settings, metric, start_gateway, token_of
from samples import fresh_scan as scan
from structlog.testing import capture_logs

from chainwatch.runners import prepare_topics
from streams.ingest import publisher as publisher_module
from streams.ingest.admission import retry_after_bounds
from streams.ingest.app import default_publisher
from streams.ingest.publisher import PublisherConfig, TransactionalPublisher
from streams.ingest.records import OutRecord

pytestmark = pytest.mark.integration


class FaultAfterAcks(TransactionalPublisher):
    """Every record is acknowledged by the real broker, then the gateway's own code fails
    with an exception no path of a transaction names (transactions_failed `unexpected`)."""

    async def _acknowledged(self, records: Sequence[OutRecord]) -> None:
        raise RuntimeError("a fault of the gateway's own after the acks")


class HangsAfterAcks(TransactionalPublisher):
    """Every record is acknowledged by the real broker, then the transaction hangs in code
    that swallows the cancel of its deadline (a hang inside the gateway: what the safety
    net is for) until `release` is set on `loop`."""

    def __init__(self, config: PublisherConfig) -> None:
        super().__init__(config)
        self.release = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def _acknowledged(self, records: Sequence[OutRecord]) -> None:
        self.loop = asyncio.get_running_loop()
        while not self.release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.release.wait()

    def let_go(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.release.set)


def _post_and_check(url: str, retry_after_s: int) -> None:
    """One post, answered `publish_failed`; the gateway stays ready, Kafka not blamed."""
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/readyz").status_code == 200
        response = client.post(
            "/v1/scans", json=[scan()], headers={"Authorization": f"Bearer {token_of('admin')}"}
        )
        assert response.status_code == 503, response.text
        answer = response.json()
        assert answer["error"] == "publish_failed"
        retry = response.headers["retry-after"]
        least, most = retry_after_bounds(retry_after_s)
        assert least <= int(retry) <= most
        assert "not Kafka's" in answer["detail"]
        assert "whether it was committed is not known" in answer["detail"]
        assert f"retry in {retry} s" in answer["detail"]
        assert client.get("/readyz").status_code == 200
    errors = "chainwatch_gateway_errors_total"
    assert metric(url, errors, endpoint="scans", error="publish_failed") == 1
    assert metric(url, errors, endpoint="scans", error="kafka_unavailable") == 0


def _not_an_outage(logs: list[dict[str, Any]]) -> None:
    events = {entry["event"] for entry in logs}
    assert "kafka unavailable" not in events, logs  # the outage log was not told
    assert "readiness changed" not in events, logs


def test_a_fault_of_the_gateways_own_is_publish_failed_not_kafkas(kafka_bootstrap: str) -> None:
    """It was answered `kafka_unavailable` ("Kafka did not answer the request's commit"),
    the code an operator pages whoever runs Kafka on, though Kafka had answered all."""
    settings = gateway_settings(kafka_bootstrap, readiness_interval_s=3600)
    prepare_topics(settings)
    server, url = start_gateway(
        settings, publisher=FaultAfterAcks(default_publisher(settings).config)
    )
    try:
        with capture_logs() as logs:
            _post_and_check(url, settings.gateway.retry_after_s)
        unexpected = {"cause": "unexpected"}
        assert metric(url, "chainwatch_gateway_transactions_failed_total", **unexpected) == 1
    finally:
        server.stop()
    _not_an_outage(logs)
    failed = [e for e in logs if e["event"] == "group transaction failed"]
    assert [e["log_level"] for e in failed] == ["error"], logs


def test_a_group_that_gives_no_outcome_is_publish_failed_and_logged_with_its_state(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net answered `kafka_unavailable` and, as if Kafka had failed, turned
    `/readyz` to 503 and logged a Kafka outage: a hang inside the gateway pulled it from
    its load balancer, paged whoever runs Kafka, and was logged as nothing of its own."""
    monkeypatch.setattr(publisher_module, "_OUTCOME_GRACE_S", 0.5)
    settings = gateway_settings(kafka_bootstrap, publish_timeout_s=2.0, readiness_interval_s=3600)
    prepare_topics(settings)
    publisher = HangsAfterAcks(default_publisher(settings).config)
    server, url = start_gateway(settings, publisher=publisher)
    try:
        with capture_logs() as logs:
            _post_and_check(url, settings.gateway.retry_after_s)
    finally:
        publisher.let_go()  # the hung group may end, and the gateway stop
        server.stop()
    _not_an_outage(logs)
    (net,) = [e for e in logs if e["event"] == "group gave no outcome"]
    assert net["log_level"] == "error"
    assert net["group"] == "running"
    assert any("HangsAfterAcks._acknowledged" in at for at in net["waiting_in"]), net
