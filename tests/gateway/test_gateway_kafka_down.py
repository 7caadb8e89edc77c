"""Kafka unavailable: 503 + Retry-After, not ready, and nothing half-published."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from cancellation import FinishesInOneTurn, cancelled_as_it_finishes
from dead_servers import DeadServer
from gateway_harness import gateway_settings, metric, read_committed, start_gateway, token_of
from samples import fresh_scan as scan

from chainwatch.free_port import free_port
from chainwatch.runners import prepare_topics
from streams.ingest.admission import retry_after_bounds
from streams.ingest.app import default_publisher
from streams.ingest.publisher import PublisherConfig, TransactionalPublisher
from streams.ingest.records import OutRecord

pytestmark = pytest.mark.integration


class BrokerLostBeforeCommit(TransactionalPublisher):
    """Every record is acknowledged by the real broker, then the commit never happens."""

    async def _acknowledged(self, records: Sequence[OutRecord]) -> None:
        raise KafkaConnectionError("broker went away before the commit")


class CommitAnswerLost(TransactionalPublisher):
    """The real broker commits, and its answer is lost (a broker frozen mid-commit)."""

    async def _commit(self, producer: AIOKafkaProducer) -> None:
        await super()._commit(producer)
        raise KafkaConnectionError("the commit's answer was lost")


class NoFreeProducer(TransactionalPublisher):
    """Every producer stays busy (a healthy broker, slow under load): a request waits for
    one until its deadline passes, and Kafka is never asked."""

    def _dispatch(self) -> None:
        pass


@pytest.mark.parametrize(
    ("faulty", "readiness_after", "error"),
    [(NoFreeProducer, 200, "publish_timeout"), (BrokerLostBeforeCommit, 503, "kafka_unavailable")],
    ids=["own-deadline", "kafka-failed"],
)
def test_only_kafkas_own_failures_make_the_gateway_not_ready(
    kafka_bootstrap: str,
    capfd: pytest.CaptureFixture[str],
    faulty: type[TransactionalPublisher],
    readiness_after: int,
    error: str,
) -> None:
    """A request whose deadline passed while it waited for a producer turned `/readyz` to
    503, was logged as a Kafka outage and counted as `kafka_unavailable`: under plain
    overload a load balancer pulled a gateway whose Kafka was healthy, and an alert on
    Kafka's failures paged. A failure of Kafka's still does all three."""
    # no background check in the test's time: `/readyz` says what the post noted
    settings = gateway_settings(kafka_bootstrap, publish_timeout_s=2.0, readiness_interval_s=3600)
    prepare_topics(settings)
    server, url = start_gateway(settings, publisher=faulty(default_publisher(settings).config))
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/readyz").status_code == 200
            capfd.readouterr()
            response = client.post(
                "/v1/scans", json=[scan()], headers={"Authorization": f"Bearer {token_of('admin')}"}
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"] == error
            assert "nothing was published" in response.json()["detail"]
            assert "retry-after" in response.headers
            assert client.get("/readyz").status_code == readiness_after
        counted = {
            code: metric(url, "chainwatch_gateway_errors_total", endpoint="scans", error=code)
            for code in ("kafka_unavailable", "publish_timeout")
        }
        assert counted == {code: float(code == error) for code in counted}
    finally:
        server.stop()
    captured = capfd.readouterr()
    outage_logged = "] kafka unavailable " in captured.out + captured.err
    assert outage_logged == (readiness_after == 503), captured


class StoppedWhileWaiting(NoFreeProducer):
    """As `NoFreeProducer`; `waiting` is set once a request waits, and `loop` is the
    gateway's, on which the test stops the publisher (as the gateway's stop does)."""

    def __init__(self, config: PublisherConfig) -> None:
        super().__init__(config)
        self.waiting = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def _dispatch(self) -> None:
        if self._waiting:
            self.loop = asyncio.get_running_loop()
            self.waiting.set()


def test_a_request_cut_by_the_publishers_stop_is_answered_shutting_down_not_kafkas_failure(
    kafka_bootstrap: str,
) -> None:
    """It was answered and counted `kafka_unavailable`, though Kafka had not failed: the
    gateway stopped."""
    settings = gateway_settings(kafka_bootstrap, publish_timeout_s=30.0, readiness_interval_s=3600)
    prepare_topics(settings)
    publisher = StoppedWhileWaiting(default_publisher(settings).config)
    server, url = start_gateway(settings, publisher=publisher)
    try:
        with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(1) as pool:
            posted = pool.submit(
                client.post,
                "/v1/scans",
                json=[scan()],
                headers={"Authorization": f"Bearer {token_of('admin')}"},
            )
            assert publisher.waiting.wait(timeout=20)
            assert publisher.loop is not None
            asyncio.run_coroutine_threadsafe(publisher.stop(), publisher.loop).result(timeout=30)
            response = posted.result(timeout=30)
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "shutting_down"
            assert "nothing was published" in response.json()["detail"]
            assert client.get("/readyz").status_code == 200
        errors = "chainwatch_gateway_errors_total"
        assert metric(url, errors, endpoint="scans", error="shutting_down") == 1
        assert metric(url, errors, endpoint="scans", error="kafka_unavailable") == 0
    finally:
        server.stop()


@pytest.fixture
def hung_broker() -> Iterator[DeadServer]:
    """Accepts TCP connections and never answers: a broker that hangs."""
    broker = DeadServer("silent")
    yield broker
    broker.close()


def test_a_hung_broker_gets_503_within_the_publish_timeout_and_probes_do_not_queue(
    hung_broker: DeadServer,
) -> None:
    publish_timeout = 2.0  # waited out: a queued probe would still show (> 1 s)
    settings = gateway_settings(
        f"127.0.0.1:{hung_broker.port}",
        publish_timeout_s=publish_timeout,
        readiness_timeout_s=1.0,
        readiness_interval_s=0.5,
        producers=2,
    )
    server, url = start_gateway(settings)
    auth = {"Authorization": f"Bearer {token_of('admin')}"}

    # Clients are made first: making one (its TLS context) costs more CPU than a probe.
    clients = [httpx.Client(base_url=url, timeout=60) for _ in range(9)]

    def probe(client: httpx.Client) -> tuple[int, float]:
        started = time.monotonic()
        status = client.get("/readyz").status_code
        return status, time.monotonic() - started

    def ingest(client: httpx.Client) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = client.post("/v1/scans", json=[scan()], headers=auth)
        return response, time.monotonic() - started

    try:
        with ThreadPoolExecutor(max_workers=9) as pool:
            probes = [pool.submit(probe, client) for client in clients[:8]]
            posted = pool.submit(ingest, clients[8])
            answers = [p.result(timeout=60) for p in probes]
            response, took = posted.result(timeout=60)
    finally:
        for client in clients:
            client.close()
        server.stop()
    print(
        f"\nhung broker: 503 after {took:.2f} s ({response.headers['server-timing']}; "
        f"publish_timeout_s {publish_timeout}); "
        f"8 probes answered in at most {max(t for _, t in answers) * 1000:.0f} ms"
    )
    assert response.status_code == 503, response.text
    least, most = retry_after_bounds(settings.gateway.retry_after_s)
    assert least <= int(response.headers["retry-after"]) <= most  # jittered
    in_gateway = float(response.headers["server-timing"].split("dur=")[1]) / 1000
    assert in_gateway <= publish_timeout + 0.5  # the gateway's own time: the deadline
    assert took <= publish_timeout + 3.0  # the client's: plus a loaded machine's scheduling
    assert all(status == 503 for status, _ in answers)
    assert max(t for _, t in answers) < 1.0


def test_repeated_client_library_errors_are_rate_limited() -> None:
    import logging

    from chainwatch.logs import RepeatFilter

    limit = RepeatFilter(window_s=60)
    record = lambda n: logging.LogRecord(  # noqa: E731
        "aiokafka.conn", logging.ERROR, __file__, 1, "Unable connect to node %s", (n,), None
    )
    passed = [limit.filter(record(n)) for n in range(1600)]
    assert passed.count(True) == 1
    ours = logging.LogRecord("streams.ingest", logging.ERROR, __file__, 1, "x", (), None)
    assert all(limit.filter(ours) for _ in range(3))


def test_an_outage_is_logged_once_then_once_per_window_and_when_it_ends() -> None:
    from structlog.testing import capture_logs

    from streams.ingest.outage import OutageLog

    now = [0.0]
    outage = OutageLog(window_s=30, clock=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(1000):  # 1,000 refusals in the first 10 s
            outage.refused("scans", "no broker")
            now[0] += 0.01
        now[0] = 31.0
        outage.refused("orders", "no broker")  # the window's summary
        outage.refused("scans", "no broker")
        now[0] = 40.0
        outage.published()
        outage.published()
        outage.refused("scans", "gone again")  # a new outage is logged at once
    lines = [(e["event"], e.get("suppressed"), e.get("refused")) for e in logs]
    assert lines == [
        ("kafka unavailable", None, None),
        ("kafka unavailable", 999, 1001),
        ("kafka available again", None, 1002),
        ("kafka unavailable", None, None),
    ]


def test_an_outage_is_timed_from_when_its_first_refused_post_began() -> None:
    """`after_s` (and `for_s`) are the outage's length as an operator reads them: a post
    is refused only once it has waited out its `publish_timeout_s`, and that wait was
    Kafka's outage too (timed from the refusal, a 5 s outage said 2 s)."""
    from structlog.testing import capture_logs

    from streams.ingest.outage import OutageLog

    now = [5.0]
    outage = OutageLog(window_s=1, clock=lambda: now[0])
    with capture_logs() as logs:
        outage.refused("scans", "no broker", began=0.0)  # waited its 5 s
        now[0] = 6.0
        outage.refused("orders", "no broker", began=1.0)
        outage.refused("scans", "no broker", began=-1.0)  # held back; begun earlier
        now[0] = 7.0
        outage.published()
    assert [(e["event"], e.get("for_s"), e.get("after_s")) for e in logs] == [
        ("kafka unavailable", None, None),
        ("kafka unavailable", 6.0, None),
        ("kafka available again", None, 8.0),
    ]


def test_the_gateways_known_counter_series_are_at_zero_from_its_start() -> None:
    """Labelled series existed only once used: the shipped alert rules' `rate()` of
    `errors_total{error="kafka_unavailable"}` (and `overloaded`, `publish_timeout`,
    `publish_failed`), and the dashboards' items and failed transactions, saw no data
    until the first such answer. Read from a started gateway before any request."""
    from prometheus_client.parser import text_string_to_metric_families

    from streams.ingest.batch import ENDPOINTS

    server, url = start_gateway(gateway_settings(f"127.0.0.1:{free_port()}"))
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    finally:
        server.stop()
    counters = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    errors = ("kafka_unavailable", "publish_timeout", "overloaded", "publish_failed")
    causes = ("kafka_error", "deadline", "commit_unanswered", "record_too_large")
    causes += ("topic_not_authorized", "shutdown", "hung", "unexpected")
    refusals = (("400", "bad_request"), ("431", "headers_too_large"))
    refusals += (("503", "too_many_connections"),)
    expected = {
        *(
            ("chainwatch_gateway_items_total", (("endpoint", e), ("outcome", o)))
            for e in ENDPOINTS
            for o in ("accepted", "rejected")
        ),
        *(
            ("chainwatch_gateway_errors_total", (("endpoint", e), ("error", error)))
            for e in (*ENDPOINTS, "customers-delete")
            for error in errors
        ),
        *(("chainwatch_gateway_transactions_failed_total", (("cause", c),)) for c in causes),
        *(
            ("chainwatch_gateway_protocol_refusals_total", (("error", e), ("status", s)))
            for s, e in refusals
        ),
    }
    assert sorted(expected - counters.keys()) == []
    assert {counters[series] for series in expected} == {0.0}


def test_unreachable_kafka_is_logged_once_not_per_request(
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = gateway_settings(f"127.0.0.1:{free_port()}", publish_timeout_s=1.0)
    server, url = start_gateway(settings)
    auth = {"Authorization": f"Bearer {token_of('admin')}"}
    capfd.readouterr()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(5):
                response = client.post("/v1/scans", json=[scan()], headers=auth)
                assert response.status_code == 503, response.text
    finally:
        server.stop()
    captured = capfd.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert len([line for line in lines if "] kafka unavailable " in line]) == 1, lines


def test_unreachable_kafka_is_503_with_retry_after_and_not_ready() -> None:
    settings = gateway_settings(f"127.0.0.1:{free_port()}", retry_after_s=7)
    server, url = start_gateway(settings)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post(
                "/v1/scans",
                json=[scan()],
                headers={"Authorization": f"Bearer {token_of('admin')}"},
            )
            assert response.status_code == 503, response.text
            assert 5 <= int(response.headers["retry-after"]) <= 9  # 7 s +- 40 %, jittered
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
        assert "nothing was published" in response.json()["detail"]
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
        bootstrap=settings.kafka.endpoint,  # the bootstrap and its security
        transactional_id=settings.gateway.transactional_id or "",
        pool_size=3,
        publish_timeout_s=2.5,
        max_group_records=settings.gateway.max_items,
        max_group_bytes=settings.gateway.max_body_bytes,
    )


def test_a_fenced_producer_given_up_on_logs_no_unretrieved_exception() -> None:
    """After a Kafka outage the gateway logged `Future exception was never retrieved`
    with a ProducerFenced traceback: the new producer of a slot fenced the old one,
    whose transaction future nobody awaited any more."""
    import gc

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import ProducerFenced
    from aiokafka.producer.transaction_manager import TransactionState

    from streams.ingest.publisher import retrieve_transaction_outcome

    async def fenced_and_dropped() -> list[dict[str, object]]:
        seen: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        for mark in (False, True):
            producer = AIOKafkaProducer(transactional_id="t", enable_idempotence=True)
            manager = producer._txn_manager
            assert manager is not None
            manager.state = TransactionState.READY  # as after InitProducerId
            manager.begin_transaction()
            if mark:
                retrieve_transaction_outcome(producer)
            manager.fatal_error(ProducerFenced())
            await producer.stop()
            del producer, manager
            gc.collect()
        return seen

    seen = asyncio.run(fenced_and_dropped())
    assert ["never retrieved" in str(ctx.get("message")) for ctx in seen] == [True]


def test_a_producer_given_up_on_sends_nothing_more() -> None:
    """Its request was answered 503. `stop()` waited for its pending batches, the close
    deadline cut that short and the sender went on retrying: had Kafka come back, the
    answered request could still have been committed. The sender is stopped first."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from streams.ingest.publisher import _abort_and_stop

    async def given_up() -> tuple[bool, bool]:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # never started
        sender = asyncio.get_running_loop().create_task(asyncio.sleep(3600))  # retrying
        producer._sender._sender_task = sender
        await producer._message_accumulator.add_message(
            TopicPartition("scans", 0), b"k", b"v", timeout=1.0
        )  # a batch Kafka never took
        async with asyncio.timeout(5):
            await _abort_and_stop(producer)
        return sender.cancelled(), producer._closed

    assert asyncio.run(given_up()) == (True, True)


def test_closing_a_given_up_producer_stops_when_its_own_deadline_cancels_it() -> None:
    """The close swallowed every exception of the sender, its own cancel included: the
    10 s deadline around it (or a shutdown) did not stop it."""
    from aiokafka import AIOKafkaProducer

    from streams.ingest.publisher import _abort_and_stop

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # a sender slow to stop

    async def closed_when_cancelled() -> bool:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
        sender = asyncio.get_running_loop().create_task(stubborn())
        producer._sender._sender_task = sender
        await asyncio.sleep(0)  # the sender runs
        closing = asyncio.get_running_loop().create_task(_abort_and_stop(producer))
        await asyncio.wait({closing}, timeout=0.5)  # the close waits on the sender
        assert not closing.done()
        closing.cancel()
        async with asyncio.timeout(5):
            await asyncio.wait({closing})
        sender.cancel()
        await asyncio.wait({sender})
        await producer.stop()
        return closing.cancelled()

    assert asyncio.run(closed_when_cancelled())


def test_a_cancellation_as_the_publishers_probe_closes_is_not_dropped() -> None:
    """Python 3.11's `wait_for` returned the result of a close that finished in the turn
    its task was cancelled, and dropped the cancellation: a Ctrl-C then went unseen."""

    async def interrupted() -> str:
        publisher = TransactionalPublisher(PublisherConfig("127.0.0.1:9", "quick-close"))
        probe = FinishesInOneTurn()
        publisher._probe = probe  # type: ignore[assignment]
        return await cancelled_as_it_finishes(publisher.stop, probe.done)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted())


def test_a_commit_whose_answer_is_lost_is_not_said_to_have_published_nothing(
    kafka_bootstrap: str,
) -> None:
    """A broker frozen mid-commit, then resumed, committed requests already answered 503
    "nothing was published": a client that believed it and sent the scans again under
    new event ids would have stored them twice."""
    settings = gateway_settings(kafka_bootstrap)
    prepare_topics(settings)
    server, url = start_gateway(
        settings, publisher=CommitAnswerLost(default_publisher(settings).config)
    )
    batch = [scan() for _ in range(3)]
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post(
                "/v1/scans", json=batch, headers={"Authorization": f"Bearer {token_of('admin')}"}
            )
    finally:
        server.stop()
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "kafka_unavailable"
    assert "retry-after" in response.headers
    detail = response.json()["detail"]
    assert "nothing was published" not in detail
    assert "whether it was committed is not known" in detail
    topic = settings.kafka.topic_prefix + "scans"
    assert len(read_committed(kafka_bootstrap, topic)) == 3  # why it may not say "nothing"
