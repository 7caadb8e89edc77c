"""`chainwatch gateway` started before Kafka serves, not ready, and becomes ready when
Kafka comes (chainwatch.gateway_topics): it exited 1 before, and a supervisor's
growing restart delay could keep it down minutes after Kafka was back."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from dead_servers import LateServer
from gateway_harness import (
    gateway_settings,
    running_gateway_process,
    start_gateway,
    token_of,
    wait_until_in_flight,
)
from kafka import KafkaAdminClient
from samples import fresh_scan

from chainwatch.runners import prepare_topics
from streams.ingest.app import default_publisher
from streams.ingest.publisher import PublisherConfig, TransactionalPublisher
from streams.ingest.records import OutRecord, Placement
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
        with running_gateway_process(
            kafka.address,
            tmp_path,
            probe="healthz",
            log_level="info",
            kafka={"request_timeout_s": 3},  # each attempt to reach it (15 s by default)
            publish_timeout_s=2.0,
            readiness_interval_s=0.2,  # /readyz's answer once prepared (2 s by default)
        ) as gw:
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
            # its start line says where its metrics are (it said metrics=None)
            (starting,) = re.findall(
                r"process_starting .* metrics=(\S+)", (tmp_path / "gateway.log").read_text()
            )
            assert starting == f"{gw.base_url}/metrics"
            metrics = httpx.get(starting, timeout=10)
            assert "chainwatch_gateway" in metrics.text
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


class Gate:
    """A `TopicPreparation` the test finishes: the topics exist (the fixture made them)."""

    def __init__(self) -> None:
        self.done = threading.Event()

    def waiting_for(self) -> str | None:
        return None if self.done.is_set() else "Kafka at the test's gate"

    async def prepared(self) -> None:
        await asyncio.to_thread(self.done.wait, 60)

    async def run(self) -> None:
        await asyncio.to_thread(self.done.wait, 60)


@pytest.mark.integration
def test_a_post_right_after_the_start_waits_for_the_topics_within_its_deadline(
    kafka_bootstrap: str,
) -> None:
    """README's flow: start the gateway, post at once. The post waits for the topic
    preparation as for a slow Kafka (`publish_timeout_s`), then is published or a 503.
    Each outcome on a gateway of its own: the 503 needs no producer, so its gateway's
    deadline is 2 s (on the 8 s one it was 8 s of waiting for the clock alone)."""
    # 8 s: the second post starts a transactional producer in what is left of it after
    # its wait, which took over 2 s at load 10 (a 503 at 3 s, 2 runs of 8 at load 18)
    settings = gateway_settings(kafka_bootstrap, publish_timeout_s=8.0)
    prepare_topics(settings)
    hurried = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"publish_timeout_s": 2.0})}
    )
    gate = Gate()
    server, url = start_gateway(hurried, preparation=gate)
    try:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        started = time.monotonic()
        late = _post_scan(url)  # nobody finishes the preparation: 503 at the deadline
        assert late.status_code == 503, late.text
        assert 1.5 < time.monotonic() - started < 14
        assert "waiting for Kafka at the test's gate" in late.json()["detail"]
    finally:
        gate.done.set()
        server.stop()

    gate = Gate()
    server, url = start_gateway(settings, preparation=gate)
    try:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        with ThreadPoolExecutor(1) as pool:
            posted = pool.submit(_post_scan, url)
            wait_until_in_flight(url, 1)  # it waits for the topics, not answered yet
            gate.done.set()
            answer = posted.result(timeout=30)
        assert answer.status_code == 202, answer.text
    finally:
        gate.done.set()
        server.stop()


class BudgetSeen(TransactionalPublisher):
    """The real publisher, noting the time it was given to publish in."""

    def __init__(self, config: PublisherConfig) -> None:
        super().__init__(config)
        self.budgets: list[float | None] = []

    async def publish(
        self, records: Sequence[OutRecord], within_s: float | None = None
    ) -> list[Placement]:
        self.budgets.append(within_s)
        return await super().publish(records, within_s)


def _post_with_topics_after(
    kafka_bootstrap: str, seconds: float, *, publish_timeout_s: float = 3.0
) -> tuple[httpx.Response, BudgetSeen, float]:
    """A post to a gateway whose topics are prepared `seconds` after the post began to
    wait for them: the answer, the publisher, how long it waited at least."""
    settings = gateway_settings(kafka_bootstrap, publish_timeout_s=publish_timeout_s)
    prepare_topics(settings)
    publisher = BudgetSeen(default_publisher(settings).config)
    gate = Gate()
    server, url = start_gateway(settings, publisher=publisher, preparation=gate)
    try:
        with ThreadPoolExecutor(1) as pool:
            posted = pool.submit(_post_scan, url)
            wait_until_in_flight(url, 1)
            seen_waiting = time.monotonic()
            time.sleep(seconds)  # time passing while it waits (not a synchronisation)
            gate.done.set()
            waited_at_least = time.monotonic() - seen_waiting
            return posted.result(timeout=30), publisher, waited_at_least
    finally:
        gate.done.set()
        server.stop()


@pytest.mark.integration
def test_a_post_that_waited_for_the_topics_publishes_in_what_is_left_of_its_deadline(
    kafka_bootstrap: str,
) -> None:
    """One `publish_timeout_s` for the wait and the publish: a post that got its topics
    at the end of its deadline had a whole second one to publish (~2x before a 503)."""
    # 9 s left after the wait: a transactional producer's start took over 2 s at load 10
    answer, publisher, waited_at_least = _post_with_topics_after(
        kafka_bootstrap, 1.0, publish_timeout_s=10.0
    )
    assert answer.status_code == 202, answer.text
    (budget,) = publisher.budgets
    assert budget is not None
    assert 0 < budget <= 10.0 - waited_at_least + 0.01


@pytest.mark.integration
def test_a_post_whose_topics_come_at_its_deadlines_end_gets_503_without_a_publish(
    kafka_bootstrap: str,
) -> None:
    """Milliseconds left: the publish would only time out (and throw away the producer
    it was starting), marking the gateway not ready right after its start."""
    answer, publisher, _ = _post_with_topics_after(kafka_bootstrap, 2.2)  # <= 0.8 s left
    assert answer.status_code == 503, answer.text
    # (on a machine so busy that the gate opened after the 3 s: the wait's own 503)
    assert any(said in answer.json()["detail"] for said in ("prepared too late", "waiting for"))
    assert publisher.budgets == []  # no publish was started


class HeldStart(TransactionalPublisher):
    """The real publisher, its first producer's warm-up held until the test lets it go (a
    new cluster's first transactional producer: Kafka creates its transaction log)."""

    def __init__(self, config: PublisherConfig) -> None:
        super().__init__(config)
        self.starting, self.go = threading.Event(), threading.Event()

    async def start(self) -> None:
        self.starting.set()
        await asyncio.to_thread(self.go.wait, 60)
        await super().start()


@pytest.mark.integration
def test_readyz_says_the_gateway_waits_for_its_producer_not_that_kafka_is_unreachable(
    kafka_bootstrap: str,
) -> None:
    """Between the topics prepared and the first producer warm, /readyz answered 503
    `"kafka": "unreachable"` (the readiness check made while the topics were prepared),
    of a Kafka that had just created them: seen for ~2 s on a first start. It is 503
    `"kafka": "waiting"` for the producer's start, then ready."""
    # no periodic check inside the test: the answer is the start's own
    settings = gateway_settings(kafka_bootstrap, readiness_interval_s=600.0)
    prepare_topics(settings)
    publisher = HeldStart(default_publisher(settings).config)
    gate = Gate()
    server, url = start_gateway(settings, publisher=publisher, preparation=gate)
    try:
        gate.done.set()  # the topics are prepared: the producer's warm-up begins
        assert publisher.starting.wait(30)
        warming = httpx.get(f"{url}/readyz", timeout=10)
        assert (warming.status_code, warming.json()) == (
            503,
            {
                "status": "not_ready",
                "kafka": "waiting",
                "waiting_for": "the start of the gateway's first Kafka producer",
            },
        )
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {
            "status": "ok",
            "waiting_for": "the start of the gateway's first Kafka producer",
        }
        publisher.go.set()
        deadline = time.monotonic() + 30
        while (ready := httpx.get(f"{url}/readyz", timeout=10)).status_code != 200:
            assert ready.json()["kafka"] == "waiting", ready.text
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.05)  # polling a condition, with a deadline
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    finally:
        gate.done.set()
        publisher.go.set()
        server.stop()
