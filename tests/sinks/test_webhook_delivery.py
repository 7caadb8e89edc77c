"""Alerts → a real local HTTP receiver: retries, signatures, isolation, dead letters, log."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from loopback_http import serving
from notify_waits import committed, committed_off_loop, secret_for, until
from sink_harness import prepare_all_topics, publish
from sink_samples import make_alert
from standardwebhooks import Webhook
from structlog.testing import capture_logs
from topic_to_end import read_topic
from webhook_format_checks import check_pagerduty, check_slack, check_teams
from webhook_servers import loopback_webhooks

from chainwatch.notify_runner import build_notifier, load_configured, run_notify
from chainwatch.settings import Settings
from chainwatch.sink_runner import run_sink
from schemas.alerts import Alert, AlertStatus, Severity
from sinks.clickhouse.connection import open_client
from sinks.webhooks.dispatcher import EndpointPipe, NotifyStats
from sinks.webhooks.log_producer import LogProducer
from sinks.webhooks.publish import publish as publish_log
from sinks.webhooks.rebalance import RebalanceListener
from sinks.webhooks.records import DEAD_LETTER_TOPIC, DELIVERIES_TOPIC, WebhookDeadLetter
from sinks.webhooks.settings import MAX_ATTEMPTS_BOUND
from sinks.webhooks.warmup import PartitionRead, Warmup
from streams.topics import ALERTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENDPOINTS = ("healthy", "flaky", "dead", "throttled", "reject")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    at: datetime
    status: int = 0
    """What it was answered (0 until then)."""


@dataclass
class Receiver:
    """Scripted answers per endpoint path; every request recorded."""

    requests: list[Received] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    down: bool = True
    """`/down` answers 503 while this is set, then 200."""
    checks: dict[str, Callable[[dict[str, Any]], list[str]]] = field(default_factory=dict)
    """Per path, what a real target requires of the body: a failed check answers 400."""
    problems: list[tuple[str, list[str]]] = field(default_factory=list)
    dead_waits_for_healthy: bool = False
    """`/dead` answers (503) only once `/healthy` got a request, or after 1.5 s (below the
    attempts' 2 s deadline): a notifier whose endpoints waited for each other would have
    its /dead give up seconds before /healthy's first delivery; one whose do not cannot
    give up before it, however fast its retries (milliseconds apart, a CI run)."""
    healthy_seen: threading.Event = field(default_factory=threading.Event)

    def answer(self, path: str) -> tuple[int, dict[str, str], float]:
        """(status, headers, delay before answering) for the n-th request to `path`."""
        with self.lock:
            n = self.counts[path] = self.counts.get(path, 0) + 1
        if path == "/healthy":
            self.healthy_seen.set()
        if path == "/dead" and self.dead_waits_for_healthy:
            self.healthy_seen.wait(1.5)  # a condition, bounded
        if path == "/flaky":
            return {1: (500, {}, 0.0), 2: (500, {}, 0.0), 3: (200, {}, 4.0)}.get(n, (200, {}, 0.0))
        if path == "/dead" or (path == "/down" and self.down):
            return 503, {}, 0.0
        if path == "/throttled" and n == 1:
            return 429, {"Retry-After": "1"}, 0.0
        if path == "/reject":
            return 400, {}, 0.0
        if path == "/slow":
            return 200, {}, 1.0  # answered a second after the post, within the deadline
        if path == "/pagerduty" and n == 1:
            return 429, {"Retry-After": "1"}, 0.0  # PagerDuty's rate limit
        if path in ("/slack", "/teams") and n == 1:
            return 503, {}, 0.0
        return 200, {}, 0.0

    def check(self, path: str, body: str) -> bool:
        check = self.checks.get(path)
        if check is None:
            return True
        try:
            wrong = check(json.loads(body))
        except ValueError:
            wrong = ["body is not JSON"]
        if wrong:
            with self.lock:
                self.problems.append((path, wrong))
        return not wrong


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = self.rfile.read(length).decode()
            if len(body) != length:
                return  # the client gave up mid-request (its attempt deadline)
            received = Received(
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                datetime.now(UTC),
            )
            state.requests.append(received)
            status, headers, delay = state.answer(self.path)
            if not state.check(self.path, body):
                status, headers, delay = 400, {}, 0.0
            received.status = status
            if delay:
                time.sleep(delay)  # longer than the client's timeout
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up on us

    with serving(Handler) as port:
        yield state, port


def _subscriptions(
    tmp_path: Path, port: int, names: tuple[str, ...] = ENDPOINTS, dead_concurrency: int = 16
) -> Path:
    filters = {
        "throttled": {"statuses": ["resolved"]},
        "reject": {"customer_ids": ["C-0"]},
    }
    endpoints = [
        {
            "name": name,
            "url": f"http://127.0.0.1:{port}/{name}",
            "secret": secret_for(name),
            "filters": filters.get(name, {}),
            "concurrency": dead_concurrency if name == "dead" else 1,
        }
        for name in names
    ]
    path = tmp_path / "subscriptions.yaml"
    path.write_text(json.dumps({"endpoints": endpoints}))  # JSON is YAML
    return path


def test_every_alert_reaches_every_subscriber_despite_failing_receivers(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
) -> None:
    state, port = receiver
    state.dead_waits_for_healthy = True
    settings = settings_factory(
        webhooks={
            "subscriptions": str(_subscriptions(tmp_path, port)),
            "allowed_hosts": "127.0.0.1",
            "allowed_networks": "127.0.0.1",  # the test's receiver is on loopback
            "timeout_s": 2.0,
            "initial_backoff_s": 0.05,
            "max_backoff_s": 0.5,
            # /flaky's first message takes 500, 500, a timeout, then 200: some 2.5 s, and
            # on a loaded machine (two CPU hogs, tracemalloc) more than 6 s: given up
            "retry_horizon_s": 10.0,
            # /dead's deliveries are given up after their 5th attempt, not after the
            # horizon: with 1000 attempts the test waited out the 10 s horizon; /flaky
            # needs 4, /throttled 2, whatever the machine's load. Each retry also waits
            # for a round of the silences (silence_follower.py): milliseconds, once ~1 s,
            # when 8 attempts made /dead's the last requests (~12 s into the drain)
            "max_attempts": 5,
        }
    )
    prepare_all_topics(settings)
    alerts: list[Alert] = [make_alert(n) for n in range(10)]
    alerts += [make_alert(n, AlertStatus.RESOLVED) for n in range(5)]
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))
    publish(settings, ALERTS, [(b"x", b"not an alert")])

    stats = run_notify(settings, drain=True)  # the `chainwatch notify` runner, until caught up

    by_path: dict[str, list[Received]] = {}
    data: dict[str, dict[str, Any]] = {}  # webhook-id -> the alert it carried
    for request in state.requests:
        by_path.setdefault(request.path, []).append(request)
        # every request, retries included, verifies with the endpoint's secret
        Webhook(secret_for(request.path[1:])).verify(request.body, request.headers)
        data[request.headers["webhook-id"]] = json.loads(request.body)["data"]
    got = {path: {r.headers["webhook-id"] for r in reqs} for path, reqs in by_path.items()}
    ids = got["/healthy"]
    assert len(ids) == len(alerts)  # one id per distinct message
    assert sorted(json.dumps(data[i], sort_keys=True) for i in ids) == sorted(
        json.dumps(a.model_dump(mode="json"), sort_keys=True) for a in alerts
    )
    assert len(by_path["/healthy"]) == len(alerts)  # no retries needed, none made
    assert got["/flaky"] == ids  # after 500, 500, a timeout
    assert len(by_path["/flaky"]) == len(alerts) + 3
    assert got["/throttled"] == {i for i in ids if data[i]["status"] == "resolved"}
    first, second = by_path["/throttled"][:2]
    assert (second.at - first.at).total_seconds() >= 0.9  # Retry-After: 1 honoured
    reject_ids = {i for i in ids if data[i]["customer"]["customer_id"] == "C-0"}
    assert got["/reject"] == reject_ids
    assert len(by_path["/reject"]) == len(reject_ids)  # 400: never retried
    assert stats.invalid == 1

    # dead letters: every dead-endpoint delivery and every rejected one, nothing else
    letters = [
        WebhookDeadLetter.model_validate_json(v) for v in read_topic(settings, DEAD_LETTER_TOPIC)
    ]
    assert {(d.endpoint, d.webhook_id) for d in letters} == (
        {("dead", i) for i in ids} | {("reject", i) for i in reject_ids}
    )
    assert stats.gave_up == len(letters)
    assert all(secret_for(d.endpoint) not in d.model_dump_json() for d in letters)
    # the healthy endpoint did not wait for the dead one to give up (its pace on a
    # loaded machine is the broker's, so only its start is compared)
    first_healthy = min(r.at for r in by_path["/healthy"])
    assert first_healthy < min(d.failed_at for d in letters if d.endpoint == "dead")

    run_sink(settings, drain=True)
    client = open_client(settings)
    try:
        rows = client.query(
            "SELECT endpoint, outcome, count(), max(attempts) FROM webhook_deliveries "
            "GROUP BY endpoint, outcome ORDER BY endpoint, outcome"
        ).result_rows
    finally:
        client.close()
    table = {(e, o): (int(n), int(a)) for e, o, n, a in rows}
    # (on a failure, what the notifier logged too: which side lost a row)
    assert table.get(("healthy", "delivered")) == (15, 1), (table, _delivery_log(settings))
    assert table[("flaky", "delivered")][0] == 15
    assert table[("dead", "gave_up")][0] == 15
    assert table[("dead", "gave_up")][1] > 3
    assert table[("reject", "gave_up")] == (len(reject_ids), 1)
    assert table[("throttled", "delivered")][0] == 5


def _delivery_log(settings: Settings) -> Counter[tuple[str, str]]:
    """The delivery log's entries per (endpoint, outcome), as the notifier published them."""
    return Counter(
        (entry["endpoint"], entry["outcome"])
        for entry in map(json.loads, read_topic(settings, DELIVERIES_TOPIC))
    )


def test_a_record_the_broker_refuses_is_reported_not_retried_forever(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)

    async def run() -> bool:
        producer = LogProducer(settings.kafka.endpoint)
        await producer.start()
        try:
            return await asyncio.wait_for(
                publish_log(producer, settings.kafka.topic(DELIVERIES_TOPIC), "k", b"x" * 2**21),
                timeout=30,
            )
        finally:
            await producer.stop()

    assert asyncio.run(run()) is False


def _settings_for(
    settings_factory: Callable[..., Settings], subscriptions: Path, horizon_s: float
) -> Settings:
    return settings_factory(
        webhooks=loopback_webhooks(
            subscriptions, retry_horizon_s=horizon_s, max_attempts=MAX_ATTEMPTS_BOUND
        )
    )


def test_a_dead_endpoint_gives_up_its_backlog_within_one_horizon(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
) -> None:
    _, port = receiver
    horizon = 3.0
    subs = _subscriptions(tmp_path, port, ("healthy", "dead"), dead_concurrency=1)
    settings = _settings_for(settings_factory, subs, horizon)
    prepare_all_topics(settings)
    alerts = [make_alert(n) for n in range(30)]
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))

    notifier = build_notifier(settings, load_configured(settings))
    began = time.monotonic()
    # one horizon per queued delivery would be 30 x 3 s
    stats = asyncio.run(asyncio.wait_for(notifier.run(asyncio.Event(), drain=True), 60))
    elapsed = time.monotonic() - began

    assert (stats.delivered, stats.gave_up) == (30, 30)
    assert elapsed < 10 * horizon
    letters = [
        WebhookDeadLetter.model_validate_json(v) for v in read_topic(settings, DEAD_LETTER_TOPIC)
    ]
    assert len({d.webhook_id for d in letters if d.endpoint == "dead"}) == 30
    # most were given up without an attempt (between probes), once the endpoint was down
    assert sum(d.attempts == 0 and "endpoint down" in d.reason for d in letters) >= 15
    assert all(d.payload["data"]["alert_id"] for d in letters)  # re-sendable by hand
    # every endpoint's position is at the end: nothing pinned by the dead one
    group = f"{settings.engine.app_id}-notify"
    assert committed(settings, f"{group}.healthy") == 30
    assert committed(settings, f"{group}.dead") == 30


def test_a_down_endpoint_loses_nothing_across_a_restart_and_holds_back_no_other(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
) -> None:
    state, port = receiver
    subs = _subscriptions(tmp_path, port, ("healthy", "down"))
    settings = _settings_for(settings_factory, subs, horizon_s=600)
    prepare_all_topics(settings)
    alerts = [make_alert(n) for n in range(10)]
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))

    def ids(path: str) -> list[str]:
        return [r.headers["webhook-id"] for r in state.requests if r.path == path]

    async def first_run() -> None:
        notifier = build_notifier(settings, load_configured(settings))
        stop = asyncio.Event()
        run = asyncio.create_task(notifier.run(stop))
        try:
            await until(
                lambda: any(p.stats.delivered == 10 for p in notifier.pipes),
                60,
                "the healthy endpoint delivered everything",
            )
            await until(lambda: len(ids("/down")) >= 2, 60, "the down endpoint was retried")
        finally:
            stop.set()
            await asyncio.wait_for(run, 60)

    asyncio.run(first_run())
    assert len(set(ids("/healthy"))) == 10
    assert len(ids("/healthy")) == 10

    state.down = False  # the endpoint is back; the notifier restarts
    notifier = build_notifier(settings, load_configured(settings))
    stats = asyncio.run(asyncio.wait_for(notifier.run(asyncio.Event(), drain=True), 60))

    assert set(ids("/down")) == set(ids("/healthy"))  # nothing lost for the down endpoint
    assert len(ids("/healthy")) == 10  # and the healthy one was not made to repeat
    assert (stats.delivered, stats.gave_up) == (10, 0)


def test_every_format_reaches_its_receiver_with_the_fields_the_target_requires(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    state, port = receiver
    state.checks = {"/slack": check_slack, "/teams": check_teams, "/pagerduty": check_pagerduty}
    routing_key = "R0UT1NGKEY0123456789abcdefABCDEF"
    monkeypatch.setenv("TEST_PD_KEY", routing_key)
    base = f"http://127.0.0.1:{port}"
    endpoints = [
        {"name": "standard", "url": f"{base}/standard", "secret": secret_for("standard")},
        {"name": "slack", "url": f"{base}/slack", "format": "slack"},
        {"name": "teams", "url": f"{base}/teams", "format": "teams"},
        {
            "name": "pagerduty",
            "url": f"{base}/pagerduty",
            "format": "pagerduty",
            "routing_key_env": "TEST_PD_KEY",
        },
        {  # a PagerDuty that refuses: the dead letter must not carry the key
            "name": "pd-reject",
            "url": f"{base}/reject",
            "format": "pagerduty",
            "routing_key_env": "TEST_PD_KEY",
        },
    ]
    subs = tmp_path / "subscriptions.yaml"
    subs.write_text(
        json.dumps(
            {
                "link_template": "https://grafana.test/d/cw-order/o?var-order_id={order_id}",
                "endpoints": endpoints,
            }
        )
    )
    settings = _settings_for(settings_factory, subs, horizon_s=30)
    prepare_all_topics(settings)
    alerts = [make_alert(n) for n in range(4)] + [make_alert(0, AlertStatus.RESOLVED)]
    alerts.append(make_alert(1, AlertStatus.RETRACTED))
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))

    notifier = build_notifier(settings, load_configured(settings))
    stats = asyncio.run(asyncio.wait_for(notifier.run(asyncio.Event(), drain=True), 90))

    assert state.problems == []
    by_path: dict[str, list[Received]] = {}
    for request in state.requests:
        by_path.setdefault(request.path, []).append(request)
    # every format retried its first failure (503 / 429) and then got everything through
    for path in ("/standard", "/slack", "/teams", "/pagerduty"):
        ids = {r.headers["webhook-id"] for r in by_path[path]}
        assert len(ids) == len(alerts), path  # one webhook-id per distinct message
    assert len(by_path["/slack"]) == len(by_path["/teams"]) == len(alerts) + 1
    assert len(by_path["/pagerduty"]) == len(alerts) + 1
    throttled, retried = by_path["/pagerduty"][:2]
    assert (retried.at - throttled.at).total_seconds() >= 0.9  # Retry-After honoured
    for request in by_path["/standard"]:
        Webhook(secret_for("standard")).verify(request.body, request.headers)
    for path in ("/slack", "/teams", "/pagerduty"):
        assert all("webhook-signature" not in r.headers for r in by_path[path])

    events = [json.loads(r.body) for r in by_path["/pagerduty"][1:]]
    actions = sorted((e["dedup_key"], e["event_action"]) for e in events)
    assert actions == sorted(
        [(a.alert_id, "trigger") for a in alerts[:4]]
        + [(alerts[0].alert_id, "resolve"), (alerts[1].alert_id, "resolve")]
    )
    assert all(e["routing_key"] == routing_key for e in events)
    slack = json.loads(by_path["/slack"][-1].body)
    assert "https://grafana.test/d/cw-order/o?var-order_id=PO-" in json.dumps(slack["blocks"])

    assert (stats.delivered, stats.gave_up) == (4 * len(alerts), len(alerts))
    letters = [
        WebhookDeadLetter.model_validate_json(v) for v in read_topic(settings, DEAD_LETTER_TOPIC)
    ]
    assert {d.endpoint for d in letters} == {"pd-reject"}
    assert len(letters) == len(alerts)
    assert all(d.payload["routing_key"] == "<redacted>" for d in letters)
    assert all(d.payload["dedup_key"] for d in letters)  # re-sendable once the key is put back
    logged = read_topic(settings, DELIVERIES_TOPIC)
    assert len(logged) == 5 * len(alerts)  # one delivery-log entry per endpoint and alert
    assert not any(routing_key.encode() in v for v in letters_raw(settings) + logged)


def letters_raw(settings: Settings) -> list[bytes]:
    return read_topic(settings, DEAD_LETTER_TOPIC)


def test_a_restart_of_worker_and_notifier_delivers_only_what_changed(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
) -> None:
    """The engine re-announces every alert it owns after a restart (same content, new
    offsets): a fresh notifier used to page each one again under a new `webhook-id`."""
    state, port = receiver
    subs = _subscriptions(tmp_path, port, ("healthy",))
    settings = _settings_for(settings_factory, subs, horizon_s=60)
    prepare_all_topics(settings)
    alerts = [make_alert(n) for n in range(8)] + [
        make_alert(n, AlertStatus.RESOLVED) for n in (0, 1)
    ]
    latest = {a.alert_id: a for a in alerts}  # what the engine owns: each alert's latest

    def records(items: list[Alert]) -> list[tuple[bytes, bytes]]:
        return [(a.alert_id.encode(), a.model_dump_json().encode()) for a in items]

    def ids() -> list[str]:
        return [r.headers["webhook-id"] for r in state.requests if r.path == "/healthy"]

    publish(settings, ALERTS, records(alerts))
    first = build_notifier(settings, load_configured(settings))
    stats = asyncio.run(asyncio.wait_for(first.run(asyncio.Event(), drain=True), 60))
    assert stats.delivered == len(alerts)
    assert len(set(ids())) == len(alerts)
    group = f"{settings.engine.app_id}-notify.healthy"
    assert committed(settings, group) == len(alerts)  # it stopped with everything committed

    changed = make_alert(5, severity=Severity.WARNING)  # an escalation the worker missed
    publish(settings, ALERTS, records([*latest.values(), changed]))  # the worker's restart
    before = len(ids())
    second = build_notifier(settings, load_configured(settings))  # a fresh process
    with capture_logs() as logged:
        stats = asyncio.run(asyncio.wait_for(second.run(asyncio.Event(), drain=True), 60))

    new = state.requests[before:]
    assert [json.loads(r.body)["data"] for r in new] == [changed.model_dump(mode="json")]
    assert new[0].headers["webhook-id"] not in ids()[:before]
    assert (stats.delivered, stats.repeats) == (1, len(latest))
    assert committed(settings, group) == len(alerts) + len(latest) + 1
    warmed = [e for e in logged if e["event"] == "webhook_warmup_done"]
    assert len(warmed) == settings.kafka.partitions  # each partition read back, logged
    assert sum(e["records"] for e in warmed) == len(alerts)


def test_notifiers_sharing_a_group_warm_up_only_their_partitions_and_again_after_a_rebalance(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, port = receiver
    settings = _settings_for(settings_factory, _subscriptions(tmp_path, port, ("healthy",)), 60)
    prepare_all_topics(settings)
    alerts = [make_alert(n) for n in range(12)]
    records = [(a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts]
    everything = set(range(settings.kafka.partitions))
    group = f"{settings.engine.app_id}-notify.healthy"
    warmed: list[tuple[int, int]] = []  # (which notifier's pipe, partition)
    done = Warmup._done

    def spy(self: Warmup, read: PartitionRead) -> None:
        warmed.append((id(self), read.tp.partition))
        done(self, read)

    monkeypatch.setattr(Warmup, "_done", spy)

    def of(pipe: int, since: int) -> list[int]:
        return sorted(p for w, p in warmed[since:] if w == pipe)

    async def committed_is(count: int) -> bool:
        return await committed_off_loop(settings, group) == count

    async def run() -> None:
        publish(settings, ALERTS, records)
        a = build_notifier(settings, load_configured(settings))
        b = build_notifier(settings, load_configured(settings))
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        run_a = asyncio.create_task(a.run(stop_a))
        try:
            await until(lambda: committed_is(len(records)), 60, "a delivered")
            first = id(a.pipes[0].warmup)
            assert set(of(first, 0)) == everything  # alone in the group: every partition
            joined = len(warmed)
            run_b = asyncio.create_task(b.run(stop_b))
            try:
                await until(
                    lambda: bool(b.pipes) and of(id(b.pipes[0].warmup), joined) != []
                    and sorted(of(first, joined) + of(id(b.pipes[0].warmup), joined))
                    == sorted(everything),
                    60,
                    "each notifier warmed up its own share after b joined",
                )  # fmt: skip
                second = id(b.pipes[0].warmup)
                assert not set(of(first, joined)) & set(of(second, joined))
                await asyncio.to_thread(publish, settings, ALERTS, records)  # a worker restart
                await until(lambda: committed_is(2 * len(records)), 60, "repeats read")
            finally:
                stop_b.set()
                await asyncio.wait_for(run_b, 60)
            left = len(warmed)
            await until(
                lambda: set(of(first, left)) == everything, 60, "a warmed up b's share again"
            )
            await asyncio.to_thread(publish, settings, ALERTS, records)  # off the loop, too
            await until(lambda: committed_is(3 * len(records)), 60, "read")
        finally:
            stop_a.set()
            await asyncio.wait_for(run_a, 60)
        assert a.stats.repeats + b.stats.repeats == 2 * len(records)

    asyncio.run(run())
    delivered = [r.headers["webhook-id"] for r in state.requests if r.path == "/healthy"]
    assert len(delivered) == len(set(delivered)) == len(records)  # each alert once, in all


def test_after_a_rebalance_only_the_partitions_reread_delivers_what_was_queued(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka revokes every partition when a notifier joins or leaves the group and
    hands the kept ones back, read again from the committed position. The deliveries
    still queued from before were delivered too (Slack posted them twice) and an old
    one's outcome settled the offset its re-read had pending. Now only the delivery
    in flight at the rebalance, which the receiver may have got, is delivered twice."""
    state, port = receiver
    settings = _settings_for(settings_factory, _subscriptions(tmp_path, port, ("down",)), 600)
    prepare_all_topics(settings)
    alerts = [make_alert(n) for n in range(12)]
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))
    everything = frozenset(range(settings.kafka.partitions))
    group = f"{settings.engine.app_id}-notify.down"
    assignments: list[tuple[EndpointPipe, frozenset[int]]] = []
    on_assigned = RebalanceListener.on_partitions_assigned

    async def spy(self: RebalanceListener, assigned: Any) -> None:
        assignments.append((self.pipe, frozenset(tp.partition for tp in assigned)))
        await on_assigned(self, assigned)

    monkeypatch.setattr(RebalanceListener, "on_partitions_assigned", spy)

    def to(pipe: EndpointPipe, since: int) -> list[frozenset[int]]:
        return [parts for p, parts in assignments[since:] if p is pipe]

    async def run() -> None:
        a = build_notifier(settings, load_configured(settings))
        b = build_notifier(settings, load_configured(settings))
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        run_a = asyncio.create_task(a.run(stop_a))
        try:
            await until(lambda: bool(a.pipes) and a.pipes[0].stats.alerts == 12, 60, "a read")
            pipe = a.pipes[0]
            await until(lambda: len(state.requests) >= 2, 60, "a retries its first delivery")
            assert pipe.in_flight == 1  # concurrency 1: the others are queued
            joined = len(assignments)
            run_b = asyncio.create_task(b.run(stop_b))
            try:
                await until(
                    lambda: bool(b.pipes) and to(b.pipes[0], joined) != [] and to(pipe, joined),
                    60,
                    "a rebalance as b joined",
                )
            finally:
                left = len(assignments)  # before b leaves: a's next assignment comes after
                stop_b.set()
                await asyncio.wait_for(run_b, 60)
            await until(lambda: everything in to(pipe, left), 60, "a got every partition back")
            state.down = False

            async def everything_committed() -> bool:
                return await committed_off_loop(settings, group) == len(alerts) and pipe.idle()

            await until(everything_committed, 60, "a delivered and committed everything")
        finally:
            stop_a.set()
            await asyncio.wait_for(run_a, 60)

    asyncio.run(run())
    delivered = [r.headers["webhook-id"] for r in state.requests if r.status == 200]
    assert len(set(delivered)) == len(alerts)  # nothing lost
    assert len(delivered) <= len(alerts) + 1  # only the one in flight, twice at most


def test_a_stopped_notifier_lets_the_post_under_way_end_and_does_not_post_it_again(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    receiver: tuple[Receiver, int],
) -> None:
    """SIGINT/SIGTERM (a rolling restart) came while a post waited for its answer: the
    post was cancelled after the receiver had it, its outcome and commit were lost, and
    the next run posted it again (a second Slack message)."""
    state, port = receiver
    settings = _settings_for(settings_factory, _subscriptions(tmp_path, port, ("slow",)), 600)
    prepare_all_topics(settings)
    alert = make_alert(1)
    publish(settings, ALERTS, [(alert.alert_id.encode(), alert.model_dump_json().encode())])
    group = f"{settings.engine.app_id}-notify.slow"

    async def stopped_mid_post() -> NotifyStats:
        notifier = build_notifier(settings, load_configured(settings))
        stop = asyncio.Event()
        run = asyncio.create_task(notifier.run(stop))
        try:
            await until(lambda: len(state.requests) == 1, 60, "the post under way")
        finally:
            stop.set()  # what SIGINT and SIGTERM do
            await asyncio.wait_for(run, 60)
        return notifier.stats

    stats = asyncio.run(stopped_mid_post())
    assert (stats.delivered, stats.gave_up) == (1, 0)  # its outcome recorded
    assert committed(settings, group) == 1
    again = build_notifier(settings, load_configured(settings))
    asyncio.run(asyncio.wait_for(again.run(asyncio.Event(), drain=True), 60))
    assert len(state.requests) == 1  # the next run does not post it again
