"""`chainwatch deliveries given-up|resend`: what the notifier gave up, re-sent safely.

End to end on the real broker and a real local receiver: the notifier gives up at a
receiver that answers 410, the receiver is fixed, and `resend` delivers exactly the
latest given-up message of each alert (same webhook-id, a valid signature, the exact
body), not one whose alert was delivered later, nor to an endpoint removed from the
subscriptions file; the outcomes are in `webhook-deliveries`, so a second `resend`
sends nothing. `given-up` and `--dry-run` send and write nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_in_process import Answer, cli_in_process
from loopback_http import receiving
from notifier_setup import loopback_settings, write_subscriptions
from notify_waits import secret_for
from sink_harness import prepare_all_topics, publish
from sink_samples import make_alert
from standardwebhooks import Webhook
from topic_to_end import read_topic
from webhook_servers import loopback_webhooks

from chainwatch import deliveries
from chainwatch.commands import deliveries as deliveries_command
from chainwatch.notify_runner import build_notifier, load_configured
from chainwatch.settings import Settings
from schemas.alerts import Alert, AlertStatus
from sinks.webhooks.records import (
    DEAD_LETTER_TOPIC,
    DELIVERIES_TOPIC,
    DeliveryLog,
    WebhookDeadLetter,
    body_of,
)
from streams.topics import ALERTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """`/ops` answers `broken_status` (410) while `broken`, else 200; `/gone` always 400."""

    port: int = 0
    broken: bool = True
    broken_status: int = 410
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def got(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    def answer(path: str, headers: dict[str, str], body: bytes) -> int:
        with state.lock:
            state.requests.append(Received(path, headers, body))
        return 400 if path == "/gone" else state.broken_status if state.broken else 200

    with receiving(answer) as state.port:
        yield state


def _notify(settings: Settings, alerts: list[Alert]) -> None:
    """Publish `alerts`, then `notify --drain` (in-process) until each is delivered or
    given up."""
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))
    notifier = build_notifier(settings, load_configured(settings))
    asyncio.run(asyncio.wait_for(notifier.run(asyncio.Event(), drain=True), 60))


def _logs(settings: Settings) -> list[DeliveryLog]:
    return [DeliveryLog.model_validate_json(v) for v in read_topic(settings, DELIVERIES_TOPIC)]


def _letters(settings: Settings) -> list[WebhookDeadLetter]:
    return [
        WebhookDeadLetter.model_validate_json(v) for v in read_topic(settings, DEAD_LETTER_TOPIC)
    ]


def test_resend_delivers_the_latest_given_up_message_of_each_alert_once(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subs = tmp_path / "subscriptions.yaml"
    settings = loopback_settings(settings_factory, subs, receiver.port, ("ops", "gone"))

    def cli(*args: str) -> Answer:
        capsys.readouterr()  # the notifier's log lines, before it
        return cli_in_process(
            ["deliveries", *args], settings.to_env(), monkeypatch, capsys, settings_built=True
        )

    # 1: everything is given up (410 at /ops, 400 at /gone); alert 4 twice (open, resolved)
    one, two, three, four = (make_alert(n) for n in (1, 2, 3, 4))
    four_resolved = make_alert(4, AlertStatus.RESOLVED)
    _notify(settings, [one, two, three, four, four_resolved])
    given_up = _letters(settings)
    assert len(given_up) == 10
    first_ids = {(d.endpoint, d.alert_id, d.payload["type"]): d.webhook_id for d in given_up}

    # 2: /ops fixed; alert 3's resolve is delivered there (its open must not follow it)
    receiver.broken = False
    _notify(settings, [make_alert(3, AlertStatus.RESOLVED)])
    assert [json.loads(r.body)["type"] for r in receiver.got("/ops")][-1] == "alert.resolved"
    # 3: `gone` leaves the subscriptions file
    write_subscriptions(subs, receiver.port, ("ops",))
    sent_before, logs_before = len(receiver.requests), len(_logs(settings))
    letters_before = len(_letters(settings))

    listed = cli("given-up", "--since", "1h")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 11  # 10 given up in step 1, alert 3's resolve at `gone` in step 2
    to_send = [line for line in lines if line.endswith("-> re-send")]
    assert sorted(line.split()[2] for line in to_send) == sorted(
        [one.alert_id, two.alert_id, four.alert_id]
    )
    # at `gone`: the latest of each alert (an earlier one is "given up again later")
    assert sum("endpoint is no longer in the subscriptions file" in line for line in lines) == 4
    three_ops = [line for line in lines if three.alert_id in line and "  ops  " in line]
    assert len(three_ops) == 1
    assert "a later message of this alert was delivered" in three_ops[0]
    four_open = next(line for line in lines if four.alert_id in line and "  ops  " in line)
    assert "given up again later" in four_open
    # a name neither in the file nor on a dead letter (a typo) is warned of; `gone`, out of
    # the file but with dead letters, is not
    named = cli("given-up", "--since", "1h", "--endpoint", "gone", "--endpoint", "opz")
    assert named.returncode == 0, named.stderr
    assert len(named.stdout.splitlines()) == 6  # 5 given up in step 1, 1 in step 2
    assert named.stderr.count("warning:") == 1
    assert (
        "warning: --endpoint 'opz' is no endpoint of the subscriptions file (ops) and gave up "
        "nothing since 1h"
    ) in named.stderr
    dry = cli("resend", "--since", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "warning:" not in dry.stderr
    assert dry.stdout == listed.stdout
    assert "3 would be re-sent (dry run: nothing sent)" in dry.stderr
    # read-only: no request, no record
    assert len(receiver.requests) == sent_before
    assert (len(_logs(settings)), len(_letters(settings))) == (logs_before, letters_before)

    # a receiver still refusing: each fails again, as a new dead letter; exit 1
    receiver.broken = True
    failed = cli("resend", "--since", "1h")
    assert failed.returncode == 1, failed.stderr
    assert "3 re-sent: 0 delivered, 3 given up again" in failed.stderr
    assert len(_letters(settings)) == letters_before + 3
    assert len(receiver.requests) == sent_before + 3

    # Ctrl-C during the first re-send: it ends, delivered and recorded; no other starts
    receiver.broken = False
    sent_before = len(receiver.requests)
    real_progress = deliveries_command._progress

    def progress(text: str) -> None:
        real_progress(text)
        if text.startswith("[1/3]") and text.endswith(": sending to 127.0.0.1"):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(deliveries_command, "_progress", progress)
    stopped = cli("resend", "--since", "1h")
    monkeypatch.setattr(deliveries_command, "_progress", real_progress)
    assert stopped.returncode == 130, stopped.stderr
    assert "1 re-sent: 1 delivered, 0 given up again; stopped: 2 not re-sent" in stopped.stderr
    assert len(receiver.requests) == sent_before + 1
    done = cli("resend", "--since", "1h")
    assert done.returncode == 0, done.stderr
    assert "2 re-sent: 2 delivered, 0 given up again" in done.stderr
    resent = receiver.requests[sent_before:]
    assert {r.path for r in resent} == {"/ops"}
    got = {json.loads(r.body)["data"]["alert_id"]: r for r in resent}
    assert set(got) == {one.alert_id, two.alert_id, four.alert_id}
    for alert, kind in ((one, "alert.open"), (two, "alert.open"), (four, "alert.resolved")):
        request = got[alert.alert_id]
        original = first_ids[("ops", alert.alert_id, kind)]
        assert request.headers["webhook-id"] == original
        Webhook(secret_for("ops")).verify(request.body, request.headers)
        letter = next(d for d in given_up if d.webhook_id == original and d.endpoint == "ops")
        assert request.body.decode() == body_of(letter.payload)
    expected = sorted(
        first_ids[("ops", a.alert_id, k)]
        for a, k in ((one, "alert.open"), (two, "alert.open"), (four, "alert.resolved"))
    )
    logs = _logs(settings)
    assert len(logs) == logs_before + 3 + 3  # the failed re-sends', then the delivered ones
    delivered = [log for log in logs if log.outcome == "delivered" and log.webhook_id in expected]
    assert sorted(log.webhook_id for log in delivered) == expected
    assert {log.alert_status for log in delivered} == {"open", "resolved"}

    # a second resend finds them delivered: nothing is sent
    sent_before = len(receiver.requests)
    again = cli("resend", "--since", "1h")
    assert again.returncode == 0, again.stderr
    assert "0 re-sent" in again.stderr
    assert len(receiver.requests) == sent_before
    assert (len(_logs(settings)), len(_letters(settings))) == (logs_before + 6, letters_before + 3)


def test_resend_skips_a_message_whose_alert_the_notifier_delivered_after_the_read(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The runbook's order: the receiver fixed, then `resend`, while `notify` runs on and
    delivers what queued behind the failures. A resolve the notifier delivers after
    `resend` read the log, before it re-sends that alert's given-up `open`: the `open` is
    not re-sent (it was, and re-opened the alert at the receiver: seen on a night-shift
    drill, 5 of 6,937 alerts left `open` after their `retracted`)."""
    settings = _ops_only(settings_factory, receiver, tmp_path)
    one, two = make_alert(1), make_alert(2)
    _notify(settings, [one, two])  # both opens given up (410)
    receiver.broken = False
    meanwhile: list[str] = []

    def watch(text: str) -> None:
        if text.startswith("[1/2]") and text.endswith(": delivered"):
            # the notifier, running beside the resend, delivers the other alert's resolve
            other, number = (two, 2) if one.alert_id in text else (one, 1)
            meanwhile.append(other.alert_id)
            resolved = [make_alert(number, AlertStatus.RESOLVED)]
            notifying = threading.Thread(target=_notify, args=(settings, resolved))
            notifying.start()
            notifying.join(90)

    answer = _resend_watched(settings, monkeypatch, capsys, watch)
    assert answer.returncode == 0, answer.stderr
    assert len(meanwhile) == 1
    assert (
        "1 re-sent: 1 delivered, 0 given up again; 1 not re-sent: a later message of the "
        "alert was delivered after the read"
    ) in answer.stderr
    skipped = next(line for line in answer.stderr.splitlines() if line.startswith("[2/2]"))
    assert meanwhile[0] in skipped
    assert ": not re-sent: a later message of this alert was delivered at " in skipped
    last = [
        json.loads(r.body)["type"]
        for r in receiver.got("/ops")
        if json.loads(r.body)["data"]["alert_id"] == meanwhile[0]
    ]
    assert last[-1] == "alert.resolved"  # not followed by the old open


def test_a_stop_during_a_retry_wait_counts_that_delivery_as_not_re_sent(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C while the first re-send waits to retry a 503: it stays given up, as does the
    second, never started; the summary said `stopped: 1 not re-sent` (the count of those
    not started replaced the one stopped in its wait)."""
    settings = _ops_only(settings_factory, receiver, tmp_path)
    _notify(settings, [make_alert(1), make_alert(2)])  # both given up (410)
    letters_before, logs_before = len(_letters(settings)), len(_logs(settings))
    receiver.broken_status = 503  # still down, now retried

    def watch(text: str) -> None:
        if text.startswith("[1/2]") and ": attempt failed: HTTP 503" in text:
            os.kill(os.getpid(), signal.SIGINT)  # before the wait for its retry

    stopped = _resend_watched(settings, monkeypatch, capsys, watch)
    assert stopped.returncode == 130, stopped.stderr
    assert "stopped before its retry; it stays given up" in stopped.stderr
    assert "0 re-sent: 0 delivered, 0 given up again; stopped: 2 not re-sent" in stopped.stderr
    assert len(receiver.got("/ops")) == 2 + 1  # the notifier's two, one re-send attempt
    assert (len(_letters(settings)), len(_logs(settings))) == (letters_before, logs_before)


def test_a_second_ctrl_c_cuts_the_attempt_under_way_and_says_so(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two Ctrl-C as the first re-send starts: exit 130 with a line naming the delivery
    cut (it ended without a word after its `sending to` line) and what to check."""
    settings = _ops_only(settings_factory, receiver, tmp_path)
    _notify(settings, [make_alert(1)])
    receiver.broken = False

    def watch(text: str) -> None:
        if text.startswith("[1/1]") and text.endswith(": sending to 127.0.0.1"):
            os.kill(os.getpid(), signal.SIGINT)  # stop: the attempt under way goes on
            os.kill(os.getpid(), signal.SIGINT)  # and is cut

    cut = _resend_watched(settings, monkeypatch, capsys, watch)
    assert cut.returncode == 130, cut.stderr
    last = cut.stderr.splitlines()[-1]
    assert last.startswith("error: interrupted; chainwatch deliveries resend stopped, [1/1] ")
    assert last.endswith(
        " cut by a second Ctrl-C, its outcome perhaps not recorded (`chainwatch deliveries "
        "given-up` says whether it is still to re-send; the receiver may have it, and a "
        "re-send keeps its webhook-id)"
    )
    assert sum("interrupted" in line for line in cut.stderr.splitlines()) == 1


@pytest.mark.parametrize("since", ["yesterday", "999999d"])
def test_resend_refuses_a_bad_since(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    """`999999d` went back past the year 1 and ended as an internal OverflowError."""
    answer = cli_in_process(
        ["deliveries", "resend", "--since", since],
        {},
        monkeypatch,
        capsys,
        settings_built=False,
    )
    assert answer.returncode == 2
    assert f"--since '{since}': expected a duration" in answer.stderr


def test_given_up_lists_without_the_endpoints_secret(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An operator checking what was given up may not have the endpoints' secrets (nor
    the notifier's address rules) in their shell: `given-up` lists without them; `resend`,
    and its `--dry-run`, still refuse in one line naming the unset variable."""
    subs = tmp_path / "subscriptions.yaml"
    variable = "CW_TEST_HOOK_GONE"
    endpoint = {"name": "gone", "url": f"http://127.0.0.1:{receiver.port}/gone"}
    subs.write_text(json.dumps({"endpoints": [{**endpoint, "secret_env": variable}]}))
    settings = settings_factory(webhooks=loopback_webhooks(subs))
    prepare_all_topics(settings)
    monkeypatch.setenv(variable, secret_for("gone"))
    one, two = make_alert(1), make_alert(2)
    _notify(settings, [one, two])  # /gone answers 400: both given up at once
    assert len(_letters(settings)) == 2
    monkeypatch.delenv(variable)
    sent_before = len(receiver.requests)

    def cli(*args: str, env: dict[str, str]) -> Answer:
        capsys.readouterr()
        return cli_in_process(["deliveries", *args], env, monkeypatch, capsys, settings_built=True)

    no_rules = {
        k: v for k, v in settings.to_env().items() if k != "CHAINWATCH_WEBHOOKS__ALLOWED_NETWORKS"
    }  # loopback is refused by the notifier's address rules without it
    listed = cli("given-up", "--since", "1h", env=no_rules)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert sorted(line.split()[2] for line in lines) == sorted([one.alert_id, two.alert_id])
    assert all("  gone  " in line and line.endswith("-> re-send") for line in lines)
    assert "given-up: 2 given up since 1h, 2 would be re-sent" in listed.stderr
    assert variable not in listed.stderr

    for dry_run in ((), ("--dry-run",)):
        refused = cli("resend", "--since", "1h", *dry_run, env=settings.to_env())
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout == ""
        assert len(refused.stderr.strip().splitlines()) == 1
        assert f"environment variable {variable} is not set" in refused.stderr
    assert len(receiver.requests) == sent_before


def test_a_since_in_the_future_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It listed `0 given up` (nothing fails after a time to come): read as all well."""
    answer = cli_in_process(
        ["deliveries", "given-up", "--since", "2099-01-01T00:00:00+01:00"],
        {},
        monkeypatch,
        capsys,
        settings_built=False,
    )
    assert answer.returncode == 2
    assert "--since '2099-01-01T00:00:00+01:00' is in the future (now is 20" in answer.stderr


def test_given_up_help_says_it_needs_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """An operator without the endpoints' secrets learns from `--help` that the listing
    runs without them (and that `resend` does not)."""
    from chainwatch.cli import main

    assert main(["deliveries", "given-up", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "needs none of the endpoints' secrets" in shown
    assert "resend does" in shown


def _ops_only(
    settings_factory: Callable[..., Settings], receiver: Receiver, tmp_path: Path
) -> Settings:
    """Settings whose one endpoint, `ops`, posts to `receiver`; the topics made."""
    return loopback_settings(settings_factory, tmp_path / "subscriptions.yaml", receiver.port)


def _resend_watched(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    watch: Callable[[str], None],
) -> Answer:
    """`chainwatch deliveries resend --since 1h` in process, `watch` given each of its
    progress lines once shown (where a test acts: a signal, the notifier beside it)."""
    shown = deliveries_command._progress

    def progress(text: str) -> None:
        shown(text)
        watch(text)

    monkeypatch.setattr(deliveries_command, "_progress", progress)
    capsys.readouterr()  # what came before (the notifier's log lines) is not its output
    return cli_in_process(
        ["deliveries", "resend", "--since", "1h"],
        settings.to_env(),
        monkeypatch,
        capsys,
        settings_built=True,
    )


def test_a_dead_letter_whose_webhook_id_is_no_header_value_is_skipped_not_sent(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Dead letters whose `webhook-id` cannot be a header value (no notifier writes one; a
    tool or a hand may): one with a non-ASCII letter stopped `resend` with an internal
    error (UnicodeEncodeError) before the others, one with a newline failed every attempt
    before it left (retried to the horizon). They are records that are no log record now:
    skipped and counted; the valid one is re-sent."""
    settings = _ops_only(settings_factory, receiver, tmp_path)
    receiver.broken = False
    now = datetime.now(UTC)

    def letter(webhook_id: str, alert_id: str) -> bytes:
        good = WebhookDeadLetter(
            dead_letter_id=WebhookDeadLetter.id_for("msg_x", "ops"), webhook_id="msg_x",
            endpoint="ops", url_host="127.0.0.1", alert_id=alert_id, reason="HTTP 410",
            attempts=1, status_codes=[410], failed_at=now,
            payload={"type": "alert.open", "data": {"alert_id": alert_id}},
        )  # fmt: skip
        return json.dumps({**json.loads(good.model_dump_json()), "webhook_id": webhook_id}).encode()

    publish(settings, DEAD_LETTER_TOPIC, [
        (b"1", letter("msg_\u00e9", "a1")), (b"2", letter("msg_1\r\nx-evil: 1", "a2")),
        (b"3", letter("msg_good", "a3")),
    ])  # fmt: skip
    answer = _resend_watched(settings, monkeypatch, capsys, lambda _text: None)
    assert answer.returncode == 0, answer.stderr
    assert "1 re-sent: 1 delivered, 0 given up again; 2 records that are no log record " in (
        answer.stderr
    )
    assert [r.headers["webhook-id"] for r in receiver.got("/ops")] == ["msg_good"]


def test_given_up_keeps_only_the_delivery_log_of_what_was_given_up(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The delivery log holds every delivery of every endpoint; `given-up` and `resend`
    read a day of it by default. They kept all of it in memory (gigabytes for a busy
    notifier): now only the records of the endpoints and alerts given up in the window
    reach the decision, and it decides as before."""
    settings = _ops_only(settings_factory, receiver, tmp_path)
    lost = make_alert(1)
    _notify(settings, [lost])  # given up (410)
    receiver.broken = False
    _notify(settings, [make_alert(n) for n in range(2, 32)])  # 30 others delivered
    assert len(_logs(settings)) == 31
    handed: list[list[DeliveryLog]] = []
    decide = deliveries.select

    def select_seen(letters: Any, logs: Any, **kwargs: Any) -> Any:
        handed.append(list(logs))
        return decide(letters, logs, **kwargs)

    monkeypatch.setattr(deliveries, "select", select_seen)
    since = datetime.now(UTC) - timedelta(hours=1)
    run = deliveries.Run(settings, since=since, sending=False)
    (given_up,) = asyncio.run(asyncio.wait_for(run.read(), 60))
    assert (given_up.letter.alert_id, given_up.resend) == (lost.alert_id, True)
    (logs,) = handed
    assert [(log.alert_id, log.outcome) for log in logs] == [(lost.alert_id, "gave_up")]
