"""A failure in one delivery never stops an endpoint; a worker that dies stops the notifier.

Audit finding: an alert whose message could not be built (a non-finite
`lateness_s` made `duration()` raise) killed the endpoint's delivery worker in
silence. Every later alert for that endpoint was never delivered, `notify
--drain` hung, a restart died again on the same record, and the process still
reported `outcome=ok`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from log_lines import Lines
from notify_waits import committed
from sink_harness import prepare_all_topics, publish
from sink_samples import make_alert
from topic_to_end import read_topic
from webhook_servers import Server, loopback_webhooks, serve, status

from chainwatch import process
from chainwatch.notify_runner import build_notifier, load_configured, run_notify
from chainwatch.settings import Settings
from schemas.alerts import Alert
from sinks.webhooks import dispatcher, formats
from sinks.webhooks.dispatcher import NotifyStats, WorkerDied
from sinks.webhooks.outcomes import Job
from sinks.webhooks.records import DEAD_LETTER_TOPIC, DELIVERIES_TOPIC, DeliveryLog
from sinks.webhooks.records import WebhookDeadLetter as Letter
from streams.topics import ALERTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POISON_LATENESS = 666.0
"""The lateness the patched message builder fails on, as `duration(inf)` did."""


def _settings(settings_factory: Callable[..., Settings], tmp_path: Path, url: str) -> Settings:
    subs = tmp_path / "subscriptions.yaml"
    endpoint = {"name": "ops-slack", "url": url, "format": "slack"}
    subs.write_text(json.dumps({"endpoints": [endpoint]}))  # JSON is YAML
    settings = settings_factory(webhooks=loopback_webhooks(subs, retry_horizon_s=30.0))
    prepare_all_topics(settings)
    return settings


def _publish(settings: Settings, alerts: list[Alert]) -> None:
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))


def _delivered_ids(server: Server) -> list[str]:
    """The alert id in each Slack message the receiver got (the context block)."""
    ids = []
    for body in server.bodies:
        context = json.loads(body)["blocks"][-1]["elements"][0]["text"]
        ids.append(context.removeprefix("alert `").removesuffix("`"))
    return ids


async def _drain(settings: Settings) -> NotifyStats:
    """`notify --drain` of the test's settings, with a deadline (it used to hang)."""
    notifier = build_notifier(settings, load_configured(settings))
    return await asyncio.wait_for(notifier.run(asyncio.Event(), drain=True), 60)


def test_an_alert_whose_message_or_delivery_fails_is_given_up_and_the_endpoint_goes_on(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three bugs stood in for by patches, one alert each: the message builder raises
    (as `duration(inf)` did), the attempt loop raises (as `Retry-After: ²` did), and
    recording an outcome raises once."""
    real_duration = formats.duration

    def duration(seconds: float) -> str:
        if seconds == POISON_LATENESS:
            raise OverflowError("cannot convert float infinity to integer")
        return real_duration(seconds)

    real_deliver = dispatcher.deliver

    async def deliver(*args: Any, **kwargs: Any) -> Any:
        if alerts[2].alert_id in args[4]:  # the body: this alert's message
            raise ValueError("invalid literal for float(): '²'")
        return await real_deliver(*args, **kwargs)

    real_delivery_log = dispatcher.delivery_log
    unrecorded: list[str] = []

    def delivery_log(job: Job, *args: Any) -> DeliveryLog:
        if job.alert.alert_id == alerts[3].alert_id and not unrecorded:
            unrecorded.append(job.msg_id)
            raise TypeError("a bug in the outcome record")
        return real_delivery_log(job, *args)

    monkeypatch.setattr(formats, "duration", duration)
    monkeypatch.setattr(dispatcher, "deliver", deliver)
    monkeypatch.setattr(dispatcher, "delivery_log", delivery_log)
    lines = Lines()
    monkeypatch.setattr(dispatcher, "log", lines)
    alerts = [make_alert(n) for n in range(6)]
    alerts[1] = alerts[1].model_copy(update={"lateness_s": POISON_LATENESS})
    failing = {alerts[1].alert_id, alerts[2].alert_id, alerts[3].alert_id}

    async def run() -> tuple[Settings, NotifyStats, list[str]]:
        async with serve(status(200)) as server:
            settings = _settings(settings_factory, tmp_path, server.url)
            _publish(settings, alerts)
            return settings, await _drain(settings), _delivered_ids(server)

    settings, stats, delivered = asyncio.run(run())

    # the worker went on: every alert after a failed one was delivered
    ok = [a.alert_id for a in alerts if a.alert_id not in failing]
    assert sorted(delivered) == sorted([*ok, alerts[3].alert_id])  # 3 went out, unrecorded
    assert (stats.delivered, stats.gave_up) == (3, 3)
    logs = [DeliveryLog.model_validate_json(v) for v in read_topic(settings, DELIVERIES_TOPIC)]
    assert len(logs) == 6  # one outcome per delivery, the failed ones too
    assert {log.alert_id for log in logs if log.outcome == "delivered"} == set(ok)
    failed = {log.alert_id: log for log in logs if log.outcome == "gave_up"}
    assert set(failed) == failing
    built, sent, recorded = (failed[a.alert_id] for a in alerts[1:4])
    assert built.last_error.startswith("processing_error: building the message failed: ")
    assert "OverflowError: cannot convert float infinity" in built.last_error
    assert built.attempts == 0  # nothing was sent
    assert sent.last_error.startswith("processing_error: delivering failed: ValueError")
    assert recorded.last_error == (
        "processing_error: recording the outcome (delivered) failed: "
        "TypeError: a bug in the outcome record"
    )
    assert recorded.webhook_id == unrecorded[0]
    letters = [Letter.model_validate_json(v) for v in read_topic(settings, DEAD_LETTER_TOPIC)]
    assert sorted((d.alert_id, d.reason) for d in letters) == sorted(
        (alert_id, log.last_error) for alert_id, log in failed.items()
    )
    payloads = {d.alert_id: d.payload for d in letters}
    assert payloads[alerts[2].alert_id]["blocks"]  # what would have been sent: re-sendable
    assert payloads[alerts[1].alert_id] == {}  # nothing could be built
    # logged with the endpoint and the error, as the bug it is
    errors = lines.named("webhook_processing_error")
    assert sorted((e["alert_id"], e["level"], e["endpoint"]) for e in errors) == sorted(
        (alert_id, "error", "ops-slack") for alert_id in failing
    )
    # and the endpoint's position is past them: a restart does not fail on them again
    assert committed(settings, f"{settings.engine.app_id}-notify.ops-slack") == 6


def test_an_alert_with_a_non_finite_lateness_holds_back_no_later_alert(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """The audit's record, end to end: an invalid alert record, the rest delivered."""
    alerts = [make_alert(n) for n in range(3)]
    good = alerts[0].model_dump_json()
    poisoned = [
        good.replace('"lateness_s":null', f'"lateness_s":{literal}').encode()
        for literal in ("1e309", "NaN", "-Infinity")
    ]
    assert all(p != good.encode() for p in poisoned)

    async def run() -> tuple[NotifyStats, list[str]]:
        async with serve(status(200)) as server:
            settings = _settings(settings_factory, tmp_path, server.url)
            publish(settings, ALERTS, [(b"x", p) for p in poisoned])
            _publish(settings, alerts)
            return await _drain(settings), _delivered_ids(server)

    stats, delivered = asyncio.run(run())

    assert sorted(delivered) == sorted(a.alert_id for a in alerts)
    assert (stats.invalid, stats.delivered, stats.gave_up) == (3, 3, 0)


def test_a_worker_that_dies_fails_the_notifier_loudly(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the bug, a dead worker is never a hang nor a stop with outcome ok; and
    the URL's token an exception quotes stays out of its log line and of the error."""
    url = "http://127.0.0.1:9/hook/T0-SECRET-TOKEN"

    async def broken(self: Any, http: Any, job: Any) -> None:
        raise RuntimeError(f"a bug outside any one delivery, posting to {url}")

    monkeypatch.setattr(dispatcher.EndpointPipe, "_settle", broken)
    lines = Lines()
    monkeypatch.setattr(process, "log", lines)
    monkeypatch.setattr(dispatcher, "log", lines)
    settings = _settings(settings_factory, tmp_path, url)
    _publish(settings, [make_alert(0)])

    with pytest.raises(WorkerDied, match="ops-slack") as info:
        run_notify(settings, drain=True)  # the `chainwatch notify --drain` runner

    assert isinstance(info.value.__cause__, RuntimeError)
    assert [line["outcome"] for line in lines.named("process_stopped")] == ["error"]
    died = lines.named("webhook_worker_died")
    assert [(d["level"], d["endpoint"]) for d in died] == [("error", "ops-slack")]
    assert "a bug outside any one delivery" in died[0]["exception"]
    assert "SECRET" not in str(info.value)
    assert [line["event"] for line in lines.lines if "SECRET" in repr(line)] == []


def test_a_worker_that_dies_lets_another_endpoints_post_under_way_end_and_be_committed(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One endpoint's bug used to cancel every endpoint: a post another endpoint's
    receiver already had was cut with no outcome nor commit, and posted again by the
    next run (a second Slack message). Now the others stop as on SIGTERM first."""
    real_settle = dispatcher.EndpointPipe._settle
    posting = asyncio.Event()

    async def settle(self: dispatcher.EndpointPipe, http: Any, job: Job) -> None:
        if self.endpoint.name != "broken":
            return await real_settle(self, http, job)
        await posting.wait()  # the other endpoint's post is under way
        raise RuntimeError("a bug outside any one delivery")

    monkeypatch.setattr(dispatcher.EndpointPipe, "_settle", settle)

    async def slow(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _s: Server) -> None:
        posting.set()
        await asyncio.sleep(1.0)  # the receiver has the post and takes its time to answer
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await w.drain()

    subs = tmp_path / "subscriptions.yaml"

    def subscribe(endpoints: list[dict[str, Any]]) -> None:
        subs.write_text(json.dumps({"endpoints": endpoints}))  # JSON is YAML

    async def run() -> tuple[Server, NotifyStats, NotifyStats]:
        async with serve(slow) as server:
            ops = {"name": "ops", "url": server.url, "format": "slack"}
            broken = {"name": "broken", "url": "http://127.0.0.1:9/hook", "format": "slack"}
            subscribe([ops, broken])
            settings = settings_factory(webhooks=loopback_webhooks(subs, retry_horizon_s=30.0))
            prepare_all_topics(settings)
            _publish(settings, [make_alert(0)])
            first = build_notifier(settings, load_configured(settings))
            with pytest.raises(WorkerDied, match="broken"):
                await asyncio.wait_for(first.run(asyncio.Event()), 60)
            assert server.requests == 1
            group = f"{settings.engine.app_id}-notify.ops"
            assert committed(settings, group) == 1  # its outcome recorded, then committed
            subscribe([ops])  # the next run, without the broken endpoint
            again = await _drain(settings)
            return server, first.stats, again

    server, before, after = asyncio.run(run())
    assert (before.delivered, before.gave_up) == (1, 0)
    assert server.requests == 1  # not posted again by the next run
    assert after.delivered == 0
