"""Silences end to end on the real broker, with a real local receiver.

A silence added by `chainwatch silences add` before the notifier starts holds the
alerts of its unit (and the orders it disrupts) from the first delivery: recorded
`silenced` with the silence's id, counted, not received; another unit's alert is
delivered. A silence added while the notifier runs takes effect without a restart.
After `silences expire` the alerts it held that are still open are delivered, once
(also by a notifier started after the one that held them), and so is the unit's next
alert. Nothing silenced is given
up, so `deliveries resend` re-sends none of it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_in_process import Answer, cli_in_process
from dead_servers import LateServer
from log_lines import Lines
from loopback_http import receiving
from notifier_setup import loopback_settings
from notify_waits import secret_for, until
from prometheus_client import REGISTRY
from sink_harness import publish, wait_for
from sink_samples import make_alert
from standardwebhooks import Webhook
from topic_to_end import read_topic

from chainwatch import notify_runner
from chainwatch import silences as silences_module
from chainwatch.notify_runner import build_notifier, ensure_notify_topics, load_configured
from chainwatch.process import Startup
from chainwatch.settings import Settings
from chainwatch.topic_partitions import partition_counts
from schemas.alerts import Alert, AlertCause, AlertStatus, AlertType, alert_id
from sinks.topic_read import read_to_end
from sinks.webhooks import dispatcher, silence_follower
from sinks.webhooks.held import HELD_TOPIC, HeldMessage, HeldRead, held_key, read_held
from sinks.webhooks.records import DEAD_LETTER_TOPIC, DELIVERIES_TOPIC, DeliveryLog
from sinks.webhooks.silence_follower import SilenceFollower
from sinks.webhooks.silences import SILENCES_TOPIC, Silence
from streams.topics import ALERTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Receiver:
    def __init__(self) -> None:
        self.port = 0
        self.bodies: list[dict[str, Any]] = []
        self.posts: list[tuple[dict[str, str], bytes]] = []
        """Each POST's headers and body, as received."""
        self.lock = threading.Lock()

    def alerts(self) -> list[tuple[str, str]]:
        """(unit or cause unit, status) of each alert received."""
        with self.lock:
            return [
                (b["data"]["unit_id"] or b["data"]["cause"]["unit_id"], b["data"]["status"])
                for b in self.bodies
            ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    def answer(path: str, headers: dict[str, str], body: bytes) -> int:
        with state.lock:
            state.bodies.append(json.loads(body))
            state.posts.append((headers, body))
        return 200

    with receiving(answer) as state.port:
        yield state


def unit_down(unit: str, n: int, status: AlertStatus = AlertStatus.OPEN) -> Alert:
    base = make_alert(n)
    return Alert.model_validate(
        {
            **base.model_dump(),
            "alert_id": alert_id(AlertType.UNIT_DOWN, unit, None, None, base.deadline),
            "type": AlertType.UNIT_DOWN,
            "order_id": None,
            "stage": None,
            "visit": None,
            "unit_id": unit,
            "customer": None,
            "fulfilled_at": base.deadline if status is AlertStatus.RESOLVED else None,
            "status": status,
        }
    )


def disrupted_by(unit: str, n: int) -> Alert:
    base = make_alert(n)
    cause = AlertCause(unit_id=unit, since=base.deadline)
    return Alert.model_validate(
        {
            **base.model_dump(),
            "alert_id": alert_id(
                AlertType.ORDER_DISRUPTED, base.order_id or "", None, None, base.deadline
            ),
            "type": AlertType.ORDER_DISRUPTED,
            "stage": None,
            "visit": None,
            "unit_id": None,
            "cause": cause.model_dump(),
        }
    )


class RunningNotifier:
    """`chainwatch notify` in-process on a thread of its own, until `stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.notifier = build_notifier(settings, load_configured(settings))
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.notifier.run(self.stopping))
        except BaseException as exc:  # reported by `stop`
            self.error = exc
        finally:
            self.loop.close()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the notifier did not stop"
        if self.error is not None:
            raise self.error


def _logs(settings: Settings) -> list[DeliveryLog]:
    return [DeliveryLog.model_validate_json(v) for v in read_topic(settings, DELIVERIES_TOPIC)]


def _silenced_total() -> float:
    value = REGISTRY.get_sample_value("chainwatch_webhook_silenced_total", {"endpoint": "ops"})
    return value or 0.0


def _ops_sample(name: str) -> float:
    """`ops`'s sample `name` as a scrape reads it (0 before it exists)."""
    return REGISTRY.get_sample_value(name, {"endpoint": "ops"}) or 0.0


def _send(settings: Settings, *alerts: Alert) -> None:
    publish(settings, ALERTS, ((a.alert_id.encode(), a.model_dump_json().encode()) for a in alerts))


def _notifier_settings(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    port: int,
    names: tuple[str, ...] = ("ops",),
    **webhooks: object,
) -> Settings:
    """Settings whose endpoints `names` (`ops` alone unless told) post to `/<name>` on
    `port`, a receiver on loopback, each signed with `secret_for(name)`, with fast retries
    (`webhooks` overrides them): `loopback_settings`, and the notifier's own topics made
    too (silences, held), as `run_notify` makes them."""
    subs = tmp_path / "subscriptions.yaml"
    settings = loopback_settings(settings_factory, subs, port, names, **webhooks)
    ensure_notify_topics(settings)
    return settings


def _the_running_notifiers_warning(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, event: str
) -> dict[str, Any]:
    """The one `event` a notifier, run until it logs it, logs from its dispatcher."""
    lines = Lines()
    monkeypatch.setattr(dispatcher, "log", lines)
    notifier = RunningNotifier(settings)
    try:
        wait_for(lambda: lines.named(event), 60, f"the warning {event}")
    finally:
        notifier.stop()
    (warned,) = lines.named(event)
    return warned


def _cli(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> Answer:
    capsys.readouterr()  # what came before (the notifier's log lines) is not its output
    return cli_in_process(list(args), settings.to_env(), monkeypatch, capsys, settings_built=True)


def _cli_done(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> str:
    """The command's stdout, stripped; it must exit 0."""
    answer = _cli(settings, monkeypatch, capsys, *args)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


def test_a_silence_holds_its_units_alerts_until_expired(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)

    def cli(*args: str) -> Answer:
        return _cli(settings, monkeypatch, capsys, *args)

    refused = cli("silences", "add", "--endpoint", "ops", "--for", "4h", "--reason", "x")
    assert refused.returncode == 2, refused.stderr
    assert "a silence of every alert is refused" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    added = cli("silences", "add", "--unit", "KNIT-03", "--for", "4h", "--reason",
                "planned maintenance", "--by", "night shift")  # fmt: skip
    assert added.returncode == 0, added.stderr
    knit03 = added.stdout.strip()
    assert len(knit03) == 32

    # written before the notifier starts: it reads the silences before its first delivery
    _send(settings, unit_down("KNIT-03", 1), disrupted_by("KNIT-03", 2), unit_down("KNIT-04", 3))
    before = _silenced_total()
    notifier = RunningNotifier(settings)
    try:
        wait_for(lambda: len(_logs(settings)) >= 3, 60, "three outcomes")
        logs = _logs(settings)
        assert sorted(log.outcome for log in logs) == ["delivered", "silenced", "silenced"]
        for log in logs:
            if log.outcome == "silenced":
                assert log.last_error.startswith(f"silenced: {knit03} (planned maintenance)")
                assert log.attempts == 0
        assert receiver.alerts() == [("KNIT-04", "open")]
        assert _silenced_total() - before == 2

        # added while it runs: no restart needed
        added = cli("silences", "add", "--unit", "KNIT-04", "--type", "unit_down", "--for",
                    "1h", "--reason", "line 4 too")  # fmt: skip
        assert added.returncode == 0, added.stderr
        knit04 = added.stdout.strip()
        _send(settings, unit_down("KNIT-04", 3, AlertStatus.RESOLVED))
        wait_for(lambda: len(_logs(settings)) >= 4, 60, "a fourth outcome")
        assert _logs(settings)[-1].outcome == "silenced"
        assert knit04 in _logs(settings)[-1].last_error

        listed = cli("silences", "list")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert [line.split()[:2] for line in lines] == [[knit03, "active"], [knit04, "active"]]
        assert "units=KNIT-03" in lines[0]
        assert "by: night shift" in lines[0]

        expired = cli("silences", "expire", knit03)
        assert expired.returncode == 0, expired.stderr
        listed = cli("silences", "list")
        assert [line.split()[0] for line in listed.stdout.splitlines()] == [knit04]
        everything = cli("silences", "list", "--all")
        assert f"{knit03}  expired" in everything.stdout
        # what it held is still open: sent now (the unit's alert and the order's)
        wait_for(lambda: len(receiver.alerts()) == 3, 60, "the held alerts sent")
        assert receiver.alerts()[1:] == [("KNIT-03", "open")] * 2

        # the unit's next change is delivered once the silence has ended
        _send(settings, unit_down("KNIT-03", 1, AlertStatus.RESOLVED))
        wait_for(lambda: ("KNIT-03", "resolved") in receiver.alerts(), 60, "KNIT-03 resolved")
        assert _logs(settings)[-1].outcome == "delivered"
    finally:
        notifier.stop()
    expected = [("KNIT-04", "open"), ("KNIT-03", "open"), ("KNIT-03", "open")]
    assert receiver.alerts() == [*expected, ("KNIT-03", "resolved")]
    assert read_topic(settings, DEAD_LETTER_TOPIC) == []  # silenced is not given up

    resend = cli("deliveries", "resend", "--since", "1h")
    assert resend.returncode == 0, resend.stderr
    assert "resend: 0 given up since 1h" in resend.stderr
    assert len(receiver.alerts()) == 4

    unknown = cli("silences", "expire", "f" * 32)
    assert unknown.returncode == 1
    assert "no silence" in unknown.stderr


def test_a_silence_added_while_a_delivery_retries_ends_its_retries(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The receiver is down (500) when the unit's alert is delivered; a silence of the
    unit is added while the second attempt is in the receiver's hands (so before the
    retry after it), and the receiver then answers 200. The retry is not made: the
    delivery is recorded `silenced` with its two failed attempts, the receiver gets
    nothing more. Without the check before each retry the retry was delivered; checked
    against the silences as new as the record (not the retry), it was too: no idle round
    of the follower comes in between to read the silence (`IDLE_S` far off)."""
    monkeypatch.setattr(silence_follower, "IDLE_S", 600.0)
    posts: list[int] = []
    lock = threading.Lock()
    second_in = threading.Event()
    release = threading.Event()

    def answer(path: str, headers: dict[str, str], body: bytes) -> int:
        with lock:
            posts.append(0)
            n = len(posts)
        if n == 2:  # held until the silence is written, then still failing
            second_in.set()
            release.wait(60)
        status = 500 if n <= 2 else 200
        with lock:
            posts[n - 1] = status
        return status

    with receiving(answer) as port:
        # an attempt's deadline well past the time a `silences add` takes
        settings = _notifier_settings(settings_factory, tmp_path, port, timeout_s=60.0)
        before = _silenced_total()
        notifier = RunningNotifier(settings)
        try:
            _send(settings, unit_down("KNIT-05", 1))
            assert second_in.wait(60), "no second attempt"
            capsys.readouterr()  # the notifier's log so far
            added = cli_in_process(
                ["silences", "add", "--unit", "KNIT-05", "--for", "1h", "--reason", "repair"],
                settings.to_env(), monkeypatch, capsys, settings_built=True,
            )  # fmt: skip
            release.set()
            assert added.returncode == 0, added.stderr
            silence_id = added.stdout.strip()
            wait_for(lambda: _logs(settings), 60, "the delivery's outcome")
        finally:
            release.set()
            notifier.stop()
    (log,) = _logs(settings)
    assert log.outcome == "silenced", log
    assert log.last_error.startswith(f"silenced: {silence_id} (repair)")
    assert (log.attempts, log.status_codes) == (2, [500, 500])
    assert posts == [500, 500]  # no retry after the silence
    assert _silenced_total() - before == 1
    assert read_topic(settings, DEAD_LETTER_TOPIC) == []


def test_an_open_alert_a_silence_held_is_sent_once_when_it_ends(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three units silenced by one silence, a fourth by another: KNIT-07's alert stays
    open, KNIT-08's is resolved while silenced, KNIT-09's alert is also covered by a
    silence still in force. When the first silence is expired, KNIT-07's open alert is
    sent (once, under the `webhook-id` its `silenced` record has, signed), recorded
    `delivered`; KNIT-08's (resolved since: its latest message is no open one) and
    KNIT-09's (still silenced) are not. Before, nothing held was ever sent."""
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)

    def cli(*args: str) -> str:
        return _cli_done(settings, monkeypatch, capsys, *args)

    window = cli("silences", "add", "--unit", "KNIT-07", "--unit", "KNIT-08", "--unit",
                 "KNIT-09", "--for", "4h", "--reason", "window")  # fmt: skip
    cli("silences", "add", "--unit", "KNIT-09", "--for", "4h", "--reason", "longer")
    held = unit_down("KNIT-07", 1)
    _send(settings, held, unit_down("KNIT-08", 2), unit_down("KNIT-08", 2, AlertStatus.RESOLVED))
    _send(settings, unit_down("KNIT-09", 3))
    released_before = _ops_sample("chainwatch_webhook_released_total")
    notifier = RunningNotifier(settings)
    try:
        wait_for(lambda: len(_logs(settings)) >= 4, 60, "four outcomes")
        assert {log.outcome for log in _logs(settings)} == {"silenced"}
        (silenced,) = [log for log in _logs(settings) if log.alert_id == held.alert_id]
        # KNIT-07's and KNIT-09's (KNIT-08's open one, superseded, at most until a check)
        wait_for(lambda: _ops_sample("chainwatch_webhook_held") == 2, 60, "two held")

        cli("silences", "expire", window)
        wait_for(lambda: receiver.alerts(), 60, "the held alert sent")
        wait_for(lambda: len(_logs(settings)) >= 5, 60, "its outcome")
        wait_for(lambda: _ops_sample("chainwatch_webhook_held") == 1, 60, "KNIT-09's held")

        def released() -> float:
            return _ops_sample("chainwatch_webhook_released_total") - released_before

        wait_for(lambda: released() >= 1, 60, "the release counted")
        # a later alert, sent after the released one: more sweeps of the held ones ran
        _send(settings, unit_down("KNIT-10", 4))
        wait_for(lambda: len(receiver.alerts()) >= 2, 60, "a later alert")
        # (received is not recorded yet: `stats` is a snapshot of the pipes' counts)
        wait_for(lambda: notifier.notifier.stats.delivered >= 2, 60, "its outcome")
        stats = notifier.notifier.stats
    finally:
        notifier.stop()
    assert receiver.alerts() == [("KNIT-07", "open"), ("KNIT-10", "open")]
    headers, body = receiver.posts[0]
    assert headers["webhook-id"] == silenced.webhook_id
    Webhook(secret_for("ops")).verify(body, headers)  # raises if not signed as any delivery is
    logs = [log for log in _logs(settings) if log.alert_id == held.alert_id]
    assert [(log.webhook_id, log.outcome) for log in logs] == [
        (silenced.webhook_id, "silenced"),
        (silenced.webhook_id, "delivered"),
    ]
    assert logs[1].attempts == 1
    assert (stats.released, stats.silenced, stats.delivered) == (1, 4, 2)
    assert released() == 1
    assert read_topic(settings, DEAD_LETTER_TOPIC) == []


def test_what_a_silence_held_is_sent_after_a_restart_and_only_once(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A notifier records the alert `silenced` and stops; the next one, started during the
    window, sends it when the window is expired (read back from the held topic: kept in
    the process only, it was never sent); the one after that does not send it again (the
    held message's tombstone), though it reads the alert's record back."""
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)

    def cli(*args: str) -> str:
        return _cli_done(settings, monkeypatch, capsys, *args)

    window = cli("silences", "add", "--unit", "KNIT-11", "--for", "4h", "--reason", "w")
    held = unit_down("KNIT-11", 1)
    _send(settings, held)
    first = RunningNotifier(settings)
    try:
        wait_for(lambda: _logs(settings), 60, "the silenced outcome")
    finally:
        first.stop()
    (silenced,) = _logs(settings)
    assert silenced.outcome == "silenced"

    second = RunningNotifier(settings)
    try:
        cli("silences", "expire", window)
        wait_for(lambda: receiver.alerts(), 60, "the held alert sent after a restart")
        wait_for(lambda: len(_logs(settings)) >= 2, 60, "its outcome")
    finally:
        second.stop()
    assert receiver.posts[0][0]["webhook-id"] == silenced.webhook_id
    assert [log.outcome for log in _logs(settings)] == ["silenced", "delivered"]

    third = RunningNotifier(settings)
    try:
        _send(settings, unit_down("KNIT-12", 2))
        wait_for(lambda: len(receiver.alerts()) >= 2, 60, "a later alert")

        def checked_twice_since_restored() -> bool:
            pipes = third.notifier.pipes
            return bool(pipes) and not pipes[0]._restoring and pipes[0].held_checks >= 2

        wait_for(checked_twice_since_restored, 60, "the held messages read back and checked")
        checks = third.notifier.pipes[0].held_checks
        wait_for(lambda: third.notifier.pipes[0].held_checks >= checks + 2, 60, "two more")
    finally:
        third.stop()
    assert receiver.alerts() == [("KNIT-11", "open"), ("KNIT-12", "open")]


def test_a_failed_read_back_of_what_was_held_is_tried_again(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A notifier restarted during the window whose first read-back of `webhook-held`
    fails (the broker is fine: the fault is injected at `read_held`) reads it again, and
    still sends the held alert when the window is expired, once. Before, a failed read
    was only logged: the alert waited for its next change."""
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)

    def cli(*args: str) -> str:
        return _cli_done(settings, monkeypatch, capsys, *args)

    window = cli("silences", "add", "--unit", "KNIT-13", "--for", "4h", "--reason", "w")
    _send(settings, unit_down("KNIT-13", 1))
    first = RunningNotifier(settings)
    try:
        wait_for(lambda: _logs(settings), 60, "the silenced outcome")
    finally:
        first.stop()

    reads: list[str] = []
    real_read = dispatcher.read_held

    async def first_read_fails(*args: Any, **kwargs: Any) -> HeldRead:
        reads.append("read")
        if len(reads) == 1:
            raise TimeoutError("injected: the first read-back fails")
        return await real_read(*args, **kwargs)

    monkeypatch.setattr(dispatcher, "read_held", first_read_fails)
    second = RunningNotifier(settings)
    try:
        wait_for(lambda: len(reads) >= 2, 60, "the read-back tried again")
        wait_for(lambda: second.notifier.pipes[0].held, 60, "the held alert read back")
        logged = capsys.readouterr().out  # (the command's run below reads its own)
        cli("silences", "expire", window)
        wait_for(lambda: receiver.alerts(), 60, "the held alert sent")
        wait_for(lambda: len(_logs(settings)) >= 2, 60, "its outcome")
    finally:
        second.stop()
    assert receiver.alerts() == [("KNIT-13", "open")]
    assert [log.outcome for log in _logs(settings)] == ["silenced", "delivered"]
    assert logged.count("webhook_held_unreadable") == 1


def test_past_its_bound_what_a_silence_held_stays_on_kafka_and_is_sent_later(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With a bound of one held message, a second silenced open alert is not kept in
    memory (counted, logged): it stays on `webhook-held`, is read back once the first is
    released, and is sent too when the window is expired, each once."""
    monkeypatch.setattr(dispatcher, "MAX_HELD", 1)
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)

    def cli(*args: str) -> str:
        return _cli_done(settings, monkeypatch, capsys, *args)

    window = cli("silences", "add", "--unit", "KNIT-14", "--unit", "KNIT-15", "--for", "4h",
                 "--reason", "w")  # fmt: skip
    over_before = _ops_sample("chainwatch_webhook_held_over_bound_total")
    _send(settings, unit_down("KNIT-14", 1), unit_down("KNIT-15", 2))
    notifier = RunningNotifier(settings)
    try:
        wait_for(lambda: len(_logs(settings)) >= 2, 60, "two silenced outcomes")

        def over() -> float:
            return _ops_sample("chainwatch_webhook_held_over_bound_total") - over_before

        wait_for(lambda: over() >= 1, 60, "the second one over the bound")
        logged = capsys.readouterr().out  # (the command's run below reads its own)
        held = len(notifier.notifier.pipes[0].held)
        gauge = _ops_sample("chainwatch_webhook_held")
        cli("silences", "expire", window)
        wait_for(lambda: len(receiver.alerts()) >= 2, 60, "both held alerts sent")
        wait_for(lambda: len(_logs(settings)) >= 4, 60, "their outcomes")
        pipe = notifier.notifier.pipes[0]
        checks = pipe.held_checks
        wait_for(lambda: pipe.held_checks >= checks + 2, 60, "two more checks")
    finally:
        notifier.stop()
    assert (held, gauge, over()) == (1, 1, 1)
    assert sorted(receiver.alerts()) == [("KNIT-14", "open"), ("KNIT-15", "open")]
    assert sorted(log.outcome for log in _logs(settings)) == ["delivered"] * 2 + ["silenced"] * 2
    assert "webhook_held_over_bound" in logged


def test_a_read_back_keeps_at_most_its_limit_and_says_more_were_left(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    """`read_held` with a limit of two, on a one-partition held topic (the records' order
    is the topic's): the first two alerts met are kept, a later tombstone and a later
    message of a kept one still apply to it, the others are left (`more`); other
    endpoints' and other partitions' messages are not counted. Before, every message of
    the endpoint was collected, whatever the bound."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = settings_factory(
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": prefix, "partitions": 1}
    )
    ensure_notify_topics(settings)

    def message(endpoint: str, n: int, *, offset: int = 0, partition: int = 0) -> bytes:
        alert = unit_down(f"KNIT-{n}", n)
        return HeldMessage(
            endpoint=endpoint, webhook_id=f"msg_{n}_{offset}", partition=partition,
            offset=offset, alert=alert,
        ).model_dump_json().encode()  # fmt: skip

    def key(endpoint: str, n: int) -> bytes:
        return held_key(endpoint, unit_down(f"KNIT-{n}", n).alert_id).encode()

    publish(settings, HELD_TOPIC, [
        (key("dev", 9), message("dev", 9)),  # another endpoint's: not counted
        (key("ops", 8), message("ops", 8, partition=3)),  # a partition not asked
        (key("ops", 1), message("ops", 1)),
        (key("ops", 2), message("ops", 2)),
        (key("ops", 3), message("ops", 3)),  # past the limit: left
        (key("ops", 1), None),  # a kept one's tombstone
        (key("ops", 2), message("ops", 2, offset=7)),  # a kept one's later message
        (key("ops", 4), message("ops", 4)),  # a slot is free again
        (key("dev", 10), message("dev", 10)),
    ])  # fmt: skip
    topic = settings.kafka.topic(HELD_TOPIC)

    def read(limit: int, known: list[str] | None = None) -> HeldRead:
        return asyncio.run(
            read_held(settings.kafka.endpoint, topic, 1, "ops", {0}, call_s=30, limit=limit,
                      known=known)
        )  # fmt: skip

    kept = read(2)
    by_unit = {h.alert.unit_id: h.offset for h in kept.found.values()}
    assert (by_unit, kept.more) == ({"KNIT-2": 7, "KNIT-4": 0}, True)
    everything = read(3)
    by_unit = {h.alert.unit_id: h.offset for h in everything.found.values()}
    assert (by_unit, everything.more) == ({"KNIT-2": 7, "KNIT-3": 0, "KNIT-4": 0}, False)
    assert (everything.unknown, everything.unknown_more) == ({}, frozenset())  # not asked
    counted = read(3, known=["ops"])
    assert (counted.unknown, counted.unknown_more) == ({"dev": 2}, frozenset())
    bounded = read(1, known=["ops"])  # at most `limit` keys of others counted too
    assert (bounded.unknown, bounded.unknown_more) == ({"dev": 1}, frozenset({"dev"}))


def test_a_read_back_past_its_bound_keeps_the_bound_and_reads_the_rest_later(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three alerts held by a notifier that stopped; the next one, with a bound of one,
    gets at most one from each read-back of `webhook-held` (not all three, then dropped
    by the bound), and still sends all three, once each, when the window is expired."""
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)

    def cli(*args: str) -> str:
        return _cli_done(settings, monkeypatch, capsys, *args)

    units = ("KNIT-21", "KNIT-22", "KNIT-23")
    window = cli("silences", "add", *(a for u in units for a in ("--unit", u)), "--for", "4h",
                 "--reason", "w")  # fmt: skip
    _send(settings, *(unit_down(u, n) for n, u in enumerate(units, 1)))
    first = RunningNotifier(settings)
    try:
        wait_for(lambda: len(_logs(settings)) >= 3, 60, "three silenced outcomes")
    finally:
        first.stop()

    reads: list[HeldRead] = []
    real_read = dispatcher.read_held

    async def counted(*args: Any, **kwargs: Any) -> HeldRead:
        read = await real_read(*args, **kwargs)
        reads.append(read)
        return read

    monkeypatch.setattr(dispatcher, "read_held", counted)
    monkeypatch.setattr(dispatcher, "MAX_HELD", 1)
    second = RunningNotifier(settings)
    try:
        wait_for(lambda: second.notifier.pipes and second.notifier.pipes[0].held, 60,
                 "one held alert read back")  # fmt: skip
        cli("silences", "expire", window)
        wait_for(lambda: len(receiver.alerts()) >= 3, 60, "the three held alerts sent")
        wait_for(lambda: len(_logs(settings)) >= 6, 60, "their outcomes")
        pipe = second.notifier.pipes[0]
        checks = pipe.held_checks
        wait_for(lambda: pipe.held_checks >= checks + 2, 60, "two more checks")
    finally:
        second.stop()
    assert max(len(read.found) for read in reads) == 1
    assert reads[0].more
    assert sorted(receiver.alerts()) == [(u, "open") for u in units]
    assert sorted(log.outcome for log in _logs(settings)) == ["delivered"] * 3 + ["silenced"] * 3


def test_an_alert_sent_while_a_read_back_past_its_bound_reads_is_not_held_again(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bound of two: three silenced alerts, two held in memory, one on `webhook-held`
    only. The window expires: the two are released and the topic is read back. That
    read meets the topic before their tombstones (the receiver answers once it has
    read), and ends only once both are tombstoned: they were sent and dropped meanwhile,
    so neither is held again (it was, and sent twice); the third is, and is sent once."""
    monkeypatch.setattr(dispatcher, "MAX_HELD", 2)
    armed = threading.Event()
    read_done = threading.Event()
    received: list[str] = []
    lock = threading.Lock()

    def answer(path: str, headers: dict[str, str], body: bytes) -> int:
        if armed.is_set():
            read_done.wait(60)  # (the read-back has met the topic as it was)
        with lock:
            received.append(json.loads(body)["data"]["unit_id"])
        return 200

    real_read = dispatcher.read_held
    gated: list[HeldRead] = []

    async def read_before_tombstones(*args: Any, **kwargs: Any) -> HeldRead:
        if not armed.is_set() or gated:
            return await real_read(*args, **kwargs)
        gated.append(read := await real_read(*args, **kwargs))
        read_done.set()
        fresh = {"limit": 100, "known": None}
        async with asyncio.timeout(60):  # until the two sent are tombstoned
            while len((await real_read(*args, **{**kwargs, **fresh})).found) > 1:
                pass
        return read

    monkeypatch.setattr(dispatcher, "read_held", read_before_tombstones)
    units = ("KNIT-31", "KNIT-32", "KNIT-33")
    with receiving(answer) as port:
        settings = _notifier_settings(settings_factory, tmp_path, port, timeout_s=60.0)
        window = _cli_done(settings, monkeypatch, capsys, "silences", "add",
                           *(a for u in units for a in ("--unit", u)), "--for", "4h",
                           "--reason", "w")  # fmt: skip
        over_before = _ops_sample("chainwatch_webhook_held_over_bound_total")
        _send(settings, *(unit_down(u, n) for n, u in enumerate(units, 1)))
        notifier = RunningNotifier(settings)
        try:
            wait_for(lambda: len(_logs(settings)) >= 3, 60, "three silenced outcomes")
            pipe = notifier.notifier.pipes[0]
            wait_for(
                lambda: _ops_sample("chainwatch_webhook_held_over_bound_total") > over_before,
                60, "the third one over the bound",
            )  # fmt: skip
            wait_for(lambda: not pipe._restoring, 60, "the first read-back's end")
            armed.set()
            _cli_done(settings, monkeypatch, capsys, "silences", "expire", window)
            wait_for(lambda: gated, 60, "the read-back")
            wait_for(lambda: len(set(received)) == 3, 60, "the three held alerts sent")
            wait_for(lambda: len(_logs(settings)) >= 6, 60, "their outcomes")
            checks = pipe.held_checks
            wait_for(lambda: pipe.held_checks >= checks + 2, 60, "two more checks")
        finally:
            read_done.set()
            notifier.stop()
    assert len(gated[0].found) == 2  # two of three: at least one of those sent meanwhile
    assert sorted(received) == list(units)
    assert sorted(log.outcome for log in _logs(settings)) == ["delivered"] * 3 + ["silenced"] * 3


def test_what_is_held_for_an_endpoint_not_in_the_file_is_told_kept_and_dropped_on_demand(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`webhook-held` keeps two live messages of `gone`, an endpoint the file no longer
    has (a third tombstoned): the notifier's read-back logs one warning naming `gone`
    with its count, and leaves them on the topic; `silences drop-held gone` says how many
    and tombstones them; `drop-held ops` (in the file) is refused. Before, they were
    skipped unseen, for ever."""
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)

    def held_of_gone(n: int) -> tuple[bytes, bytes]:
        alert = unit_down(f"KNIT-{30 + n}", n)
        held = HeldMessage(endpoint="gone", webhook_id=f"msg_{n}", partition=0, offset=n,
                           alert=alert)  # fmt: skip
        return held_key("gone", alert.alert_id).encode(), held.model_dump_json().encode()

    tombstoned = held_of_gone(3)
    publish(settings, HELD_TOPIC, [held_of_gone(1), held_of_gone(2), tombstoned,
                                   (tombstoned[0], None)])  # fmt: skip
    topic, partitions = settings.kafka.topic(HELD_TOPIC), settings.kafka.partitions

    def unknown() -> dict[str, int]:
        read = asyncio.run(
            read_held(settings.kafka.endpoint, topic, partitions, "ops", {0}, call_s=30,
                      limit=10, known=["ops"])
        )  # fmt: skip
        return read.unknown

    warned = _the_running_notifiers_warning(settings, monkeypatch, "webhook_held_unknown_endpoint")
    assert (warned["endpoint"], warned["held"], warned["at_least"]) == ("gone", 2, False)
    assert unknown() == {"gone": 2}  # kept
    # a key that is no UTF-8 (no notifier's: a tool's) is dropped under its own bytes
    publish(settings, HELD_TOPIC, [(b"gone|\xff\xfe", held_of_gone(4)[1])])

    refused = _cli(settings, monkeypatch, capsys, "silences", "drop-held", "ops")
    assert refused.returncode == 1
    assert "is in the subscriptions file" in refused.stderr
    said = _cli(settings, monkeypatch, capsys, "silences", "drop-held", "gone")
    assert said.returncode == 0, said.stderr
    assert "held messages of endpoint gone: 3" in said.stderr
    assert "dropped: 3" in said.stderr
    assert unknown() == {}
    again = _cli(settings, monkeypatch, capsys, "silences", "drop-held", "gone")
    assert "held messages of endpoint gone: 0" in again.stderr


def test_silences_that_cannot_be_read_hold_deliveries_and_readiness(
    settings_factory: Callable[..., Settings],
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Kafka away when the notifier starts: no delivery is made on a guess (a delivery's
    wait for the silences does not end), the process is not ready with the reason; once
    Kafka answers the silences are read and the wait ends, the silence known."""
    settings = settings_factory()
    ensure_notify_topics(settings)
    added = cli_in_process(
        ["silences", "add", "--unit", "KNIT-03", "--for", "1h", "--reason", "r"],
        settings.to_env(), monkeypatch, capsys, settings_built=True,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    late = LateServer(kafka_bootstrap)
    follower = SilenceFollower(
        late.address,  # type: ignore[arg-type]  # a bootstrap string (kafka_security.py)
        settings.kafka.topic(SILENCES_TOPIC),
        settings.kafka.partitions,
        call_s=1.0,
    )
    startup = Startup()
    startup.also_ready(follower.problem)

    async def main() -> None:
        stop = asyncio.Event()
        following = asyncio.create_task(follower.run(stop))
        try:
            read_at = time.monotonic()
            waiting = asyncio.create_task(follower.current_since(read_at, cancel=[stop]))
            await until(
                lambda: "did not start a reader" in (follower.problem() or ""), 30, "a failure"
            )
            ready, reasons = startup.ready()
            assert not ready
            assert "silences topic" in reasons["reasons"][0]
            assert not waiting.done()  # the delivery still waits
            late.open()
            assert await asyncio.wait_for(waiting, 60) is True
            assert startup.ready() == (True, {"reasons": []})
            assert list(follower.book.silences) == [added.stdout.strip()]
        finally:
            stop.set()
            await asyncio.wait_for(following, 30)

    try:
        asyncio.run(main())
    finally:
        late.close()


def test_a_round_of_the_silences_asked_for_starts_at_once(
    settings_factory: Callable[..., Settings],
) -> None:
    """Rounds asked for one after another (a delivery's wait, a retry's) take
    milliseconds, not the half second the broker held the reader's idle fetch ahead of
    each round's ListOffsets (aiokafka's `fetch_max_wait_ms`): the reader is paused
    between rounds. Five rounds took 2.5 s; a second is far above what they take now."""
    settings = settings_factory()
    ensure_notify_topics(settings)
    follower = notify_runner.silence_follower(settings)

    async def main() -> float:
        stop = asyncio.Event()
        following = asyncio.create_task(follower.run(stop))
        try:
            assert await asyncio.wait_for(follower.current_since(0, cancel=[stop]), 60)
            began = time.monotonic()
            for _ in range(5):
                since = time.monotonic()
                assert await asyncio.wait_for(follower.current_since(since, cancel=[stop]), 60)
            return time.monotonic() - began
        finally:
            stop.set()
            await asyncio.wait_for(following, 30)

    took_s = asyncio.run(main())
    assert took_s < 1.0, f"five rounds asked for took {took_s:.2f} s"


def test_add_refuses_an_unknown_stage_and_past_the_bound(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stage the SLA plan does not have would silence nothing: a usage error. A notifier
    keeps at most `MAX_SILENCES`: `add` refuses one more while that many are not over."""
    settings = settings_factory()

    def cli(*args: str) -> Answer:
        capsys.readouterr()
        return cli_in_process(
            list(args), settings.to_env(), monkeypatch, capsys, settings_built=True
        )

    listed = cli("silences", "list")  # no topic yet: none
    assert (listed.returncode, listed.stdout) == (0, ""), listed.stderr
    typo = cli("silences", "add", "--stage", "dyeng", "--for", "1h", "--reason", "r")
    assert typo.returncode == 2
    assert "--stage dyeng: no stage of the SLA plan" in typo.stderr
    monkeypatch.setattr(silences_module, "MAX_SILENCES", 2)
    for unit in ("A", "B"):
        assert (
            cli("silences", "add", "--unit", unit, "--for", "1h", "--reason", "r").returncode == 0
        )
    third = cli("silences", "add", "--unit", "C", "--for", "1h", "--reason", "r")
    assert third.returncode == 1
    assert "2 silences are in force or ahead, the most a notifier keeps (2)" in third.stderr
    first = cli("silences", "list").stdout.split()[0]
    assert cli("silences", "expire", first).returncode == 0  # an expired one does not count
    assert cli("silences", "add", "--unit", "C", "--for", "1h", "--reason", "r").returncode == 0
    assert len(cli("silences", "list", "--all").stdout.splitlines()) == 3


def test_the_notifier_creates_all_its_topics_in_one_admin_round(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run_notify` created alerts and its log, then the silence follower its topic: two
    admin connections, listings and CreateTopics at every start. One now, silences
    compacted as before; the topics are there for the run that follows."""
    from chainwatch import kafka_admin, notify_runner
    from chainwatch.topic_partitions import partition_counts

    subscriptions = tmp_path / "subscriptions.yaml"
    subscriptions.write_text(
        '{"endpoints": [{"name": "x", "url": "http://127.0.0.1:9/x", "format": "slack"}]}'
    )
    settings = settings_factory(
        webhooks={
            "subscriptions": str(subscriptions),
            "allowed_hosts": "127.0.0.1",
            "allowed_networks": "127.0.0.1",
        }
    )
    rounds: list[dict[str, dict[str, str]]] = []
    create = kafka_admin.create_missing_topics

    def counted(bootstrap: Any, configs: Any, **kwargs: Any) -> None:
        rounds.append({name: dict(c) for name, c in configs.items()})
        create(bootstrap, configs, **kwargs)

    monkeypatch.setattr(kafka_admin, "create_missing_topics", counted)
    monkeypatch.setattr(notify_runner, "create_missing_topics", counted)
    notify_runner.run_notify(settings, drain=True)  # nothing to deliver: returns at once

    kafka = settings.kafka
    topics = [kafka.topic(t) for t in (ALERTS, DELIVERIES_TOPIC, DEAD_LETTER_TOPIC)]
    silences = kafka.topic(SILENCES_TOPIC)
    held = kafka.topic(HELD_TOPIC)
    assert [sorted(r) for r in rounds] == [sorted([*topics, silences, held])]
    assert rounds[0][silences]["cleanup.policy"] == "compact"
    assert rounds[0][held]["cleanup.policy"] == "compact"
    counts = partition_counts(kafka.endpoint, [*topics, silences, held], request_timeout_s=15)
    assert counts == dict.fromkeys([*topics, silences, held], 4)


def test_notify_drain_says_how_many_alerts_each_endpoint_leaves_held(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`notify --drain` delivers what is there and exits: an alert a silence holds is not
    waited for, but its summary and a log line per endpoint say how many each leaves held
    (on the held topic: a running notifier sends them when their silence ends). KNIT-07
    is silenced for both endpoints, KNIT-09 for `pager` only; KNIT-08's open alert,
    silenced, is resolved in the same read (nothing left to send: not held). Before, the
    drain said nothing of them."""
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port, ("ops", "pager"))

    def cli(*args: str) -> str:
        return _cli_done(settings, monkeypatch, capsys, *args)

    cli("silences", "add", "--unit", "KNIT-07", "--unit", "KNIT-08", "--for", "4h",
        "--reason", "window")  # fmt: skip
    cli("silences", "add", "--unit", "KNIT-09", "--endpoint", "pager", "--for", "4h",
        "--reason", "pager's")  # fmt: skip
    _send(settings, unit_down("KNIT-07", 1), unit_down("KNIT-08", 2))
    _send(settings, unit_down("KNIT-08", 2, AlertStatus.RESOLVED), unit_down("KNIT-09", 3))
    _send(settings, unit_down("KNIT-10", 4))
    drained = _cli(settings, monkeypatch, capsys, "notify", "--drain")
    assert drained.returncode == 0, drained.stderr
    assert sorted(receiver.alerts()) == [("KNIT-09", "open"), ("KNIT-10", "open"),
                                         ("KNIT-10", "open")]  # fmt: skip
    summary = [line for line in drained.stderr.splitlines() if line.startswith("notify: ")]
    assert summary[-1] == (
        "notify: 3 alerts left held by a silence (ops 1, pager 2), sent when their silence "
        "ends by a running notifier"
    ), drained.stderr
    logged = drained.stderr.splitlines()  # (its log: on stderr, as a process's)
    lines = [line for line in logged if "notify_drain_left_held" in line]
    assert len(lines) == 2, drained.stderr
    for name, count in (("ops", 1), ("pager", 2)):
        (line,) = [line for line in lines if f"endpoint={name} " in line]
        assert f"held={count} " in line, line


def test_a_drain_does_not_count_a_held_alert_a_later_message_superseded(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """KNIT-31's open alert is held by a silence (one drain); it is resolved, the resolve
    read by the next drain. Nothing is left to send: a notifier drops the held message
    once it sees the later one. Before, only the check of held alerts every
    `RELEASE_CHECK_S` dropped it, and a drain ending before it counted it held: one high.
    The second drain's read-back of the held topic is made to end after its deliveries
    (it raced them: a CI run counted one held), and the drain waits for it."""
    monkeypatch.setattr(dispatcher, "RELEASE_CHECK_S", 600.0)  # no check within a drain
    real_read, real_finish = dispatcher.read_held, dispatcher.EndpointPipe.finish_in_flight
    late, delivered = threading.Event(), threading.Event()

    async def finish(pipe: dispatcher.EndpointPipe) -> None:
        await real_finish(pipe)
        if late.is_set():  # the second drain's
            delivered.set()

    async def read_after_the_deliveries(*args: Any, **kwargs: Any) -> HeldRead:
        if late.is_set():
            assert await asyncio.to_thread(delivered.wait, 60), "the drain never delivered"
        return await real_read(*args, **kwargs)

    monkeypatch.setattr(dispatcher.EndpointPipe, "finish_in_flight", finish)
    monkeypatch.setattr(dispatcher, "read_held", read_after_the_deliveries)
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)
    _cli_done(settings, monkeypatch, capsys, "silences", "add", "--unit", "KNIT-31",
              "--for", "4h", "--reason", "window")  # fmt: skip

    def drained() -> str:
        answer = _cli(settings, monkeypatch, capsys, "notify", "--drain")
        assert answer.returncode == 0, answer.stderr
        summary = [line for line in answer.stderr.splitlines() if line.startswith("notify: ")]
        return summary[-1]

    _send(settings, unit_down("KNIT-31", 1))
    assert drained().startswith("notify: 1 alert left held by a silence (ops 1)")
    _send(settings, unit_down("KNIT-31", 1, AlertStatus.RESOLVED))
    late.set()
    assert drained() == "notify: 0 alerts left held by a silence"
    assert receiver.alerts() == []
    assert sorted(log.outcome for log in _logs(settings)) == ["silenced"] * 2


def test_a_held_record_that_is_no_message_of_its_key_is_not_held_and_is_told(
    settings_factory: Callable[..., Settings],
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records under `ops|<alert id>` keys on `webhook-held` that are no message of that
    key: not JSON, another alert's message, another endpoint's, one whose `webhook-id`
    is no header value (every attempt failed before it left). None is held (one of
    another alert was held under the key's id, and its release tombstoned its own key,
    never this one: it was sent again after every restart); they are counted by key (a
    later record of a key decides) and the notifier's read-back says so, once, with the
    first one's key and reason (by alert id). Before, they were skipped unsaid or held."""
    settings = _notifier_settings(settings_factory, tmp_path, receiver.port)
    topic, partitions = settings.kafka.topic(HELD_TOPIC), settings.kafka.partitions

    def held(endpoint: str, alert: Alert, webhook_id: str = "") -> bytes:
        message = HeldMessage(endpoint=endpoint, webhook_id=f"msg_{alert.unit_id}",
                              partition=0, offset=1, alert=alert)  # fmt: skip
        value = json.loads(message.model_dump_json())
        return json.dumps({**value, "webhook_id": webhook_id or message.webhook_id}).encode()

    a, b, c, d, e, f = (unit_down(f"KNIT-{60 + n}", n) for n in range(6))
    key = {x.unit_id: held_key("ops", x.alert_id).encode() for x in (a, b, c, d, e, f)}
    publish(settings, HELD_TOPIC, [
        (key["KNIT-60"], b"not json"),
        (key["KNIT-61"], held("ops", e)),  # e's message under b's key
        (key["KNIT-62"], held("dev", c)),  # another endpoint's under ops's key
        (key["KNIT-63"], b"{}"),
        (key["KNIT-63"], held("ops", d)),  # a later record of the key decides
        (key["KNIT-64"], held("ops", e)),
        (key["KNIT-65"], held("ops", f, "msg_1\r\nx-evil: 1")),  # no header value
    ])  # fmt: skip
    read = asyncio.run(
        read_held(settings.kafka.endpoint, topic, partitions, "ops", {0}, call_s=30, limit=10)
    )
    assert sorted(h.alert.unit_id or "" for h in read.found.values()) == ["KNIT-63", "KNIT-64"]
    assert read.invalid == 4
    why = {
        key["KNIT-60"]: "record: Invalid JSON",
        key["KNIT-61"]: f"its alert_id {e.alert_id!r} is not the key's",
        key["KNIT-62"]: "its endpoint 'dev' is not the key's",
        key["KNIT-65"]: "webhook_id: String should match pattern",
    }
    first = min(why)  # the first by alert id: the same whichever partition was read first
    assert read.invalid_reason.startswith(f"key {first!r}: {why[first]}"), read.invalid_reason

    warned = _the_running_notifiers_warning(settings, monkeypatch, "webhook_held_invalid")
    assert (warned["endpoint"], warned["records"]) == ("ops", 4)
    assert warned["first"] == read.invalid_reason


def test_a_silence_under_a_key_that_is_not_its_id_is_skipped_by_notifier_and_cli(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A silence written under another key than its id (no `add` writes one; a tool or a
    hand may) outlived its `expire`, which writes under its id: a notifier started after
    it read both, and which one it kept came from the order of their partitions. Now
    neither the notifier's follower (counted in `skipped`, logged
    `webhook_silence_invalid`) nor `silences list` takes it; one under its own id is. A
    record that is no silence, written over one, ends it in both: the latest record of a
    key decides, as it does for a notifier started once compaction removed the older."""
    settings = settings_factory()
    ensure_notify_topics(settings)
    now = datetime.now(UTC)
    window = {"starts_at": now, "ends_at": now + timedelta(hours=1), "reason": "r"}
    astray, kept = Silence(units=["KNIT-70"], **window), Silence(units=["KNIT-71"], **window)
    overwritten = Silence(units=["KNIT-72"], **window)
    publish(settings, SILENCES_TOPIC, [
        (b"other-key", astray.model_dump_json().encode()),
        (kept.silence_id.encode(), kept.model_dump_json().encode()),
        (overwritten.silence_id.encode(), overwritten.model_dump_json().encode()),
        (overwritten.silence_id.encode(), b"{not a silence"),
    ])  # fmt: skip
    lines = Lines()
    monkeypatch.setattr(silence_follower, "log", lines)
    follower = notify_runner.silence_follower(settings)

    async def main() -> None:
        stop = asyncio.Event()
        following = asyncio.create_task(follower.run(stop))
        try:
            assert await asyncio.wait_for(follower.current_since(0, cancel=[stop]), 60)
        finally:
            stop.set()
            await asyncio.wait_for(following, 30)

    asyncio.run(main())
    assert (set(follower.book.silences), follower.skipped) == ({kept.silence_id}, 2)
    said = next(e for e in lines.named("webhook_silence_invalid") if "other-key" in e["error"])
    assert said["error"] == f"silence {astray.silence_id} under the key b'other-key': not its id"
    listed = _cli_done(settings, monkeypatch, capsys, "silences", "list", "--all")
    assert [line.split()[0] for line in listed.splitlines()] == [kept.silence_id]


def _latest_silence_records(settings: Settings) -> dict[str, bytes | None]:
    """Each key of the silences topic -> its latest value (None: a tombstone)."""
    topic = settings.kafka.topic(SILENCES_TOPIC)
    counts = partition_counts(settings.kafka.endpoint, [topic], request_timeout_s=30)
    records = asyncio.run(
        read_to_end(settings.kafka.endpoint, topic, counts[topic], stall_s=30, close_s=30)
    )
    latest: dict[str, bytes | None] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        latest[(record.key or b"").decode()] = record.value
    return latest


def test_add_and_expire_tombstone_silences_that_ended_more_than_the_retention_ago(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing tombstoned an ended silence: the compacted topic kept every silence ever
    added, one record each, for ever, and every notifier reads all of it at its start.
    `add` and `expire` now write a tombstone for each that ended more than the retention
    (7 days) ago, at most `MAX_TOMBSTONES` a run (the first ended first), and say so; one
    that ended within it stays (`list --all` shows it), and one in force or ahead is never
    touched."""
    settings = settings_factory()
    ensure_notify_topics(settings)
    now = datetime.now(UTC)

    def silence(unit: str, starts: timedelta, ends: timedelta) -> Silence:
        return Silence(units=[unit], starts_at=now + starts, ends_at=now + ends, reason="r")

    days = timedelta(days=1)
    oldest = silence("KNIT-80", -10 * days, -9 * days)
    old = silence("KNIT-81", -9 * days, -8 * days)
    recent = silence("KNIT-82", -8 * days, -6 * days - timedelta(hours=23))
    in_force = silence("KNIT-83", -20 * days, 9 * days)
    ahead = silence("KNIT-84", 1 * days, 2 * days)
    kept = [recent, in_force, ahead]
    publish(settings, SILENCES_TOPIC, [
        (s.silence_id.encode(), s.model_dump_json().encode()) for s in (oldest, old, *kept)
    ])  # fmt: skip
    monkeypatch.setattr(silences_module, "MAX_TOMBSTONES", 1)

    added = _cli(settings, monkeypatch, capsys, "silences", "add", "--unit", "KNIT-85",
                 "--for", "1h", "--reason", "r")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert (
        "removed: 1 silence that ended more than 7 days ago (a tombstone each); 1 more at "
        "the next add or expire"
    ) in added.stderr
    latest = _latest_silence_records(settings)
    assert latest[oldest.silence_id] is None  # the first ended goes first
    assert latest[old.silence_id] is not None
    for silence_kept in kept:
        assert latest[silence_kept.silence_id] == silence_kept.model_dump_json().encode()

    expired = _cli(settings, monkeypatch, capsys, "silences", "expire", recent.silence_id)
    assert expired.returncode == 0, expired.stderr
    assert "removed: 1 silence that ended more than 7 days ago (a tombstone each)\n" in (
        expired.stderr
    )
    latest = _latest_silence_records(settings)
    assert latest[old.silence_id] is None
    for silence_kept in kept:
        assert latest[silence_kept.silence_id] == silence_kept.model_dump_json().encode()
    assert latest[added.stdout.strip()] is not None
    listed = _cli_done(settings, monkeypatch, capsys, "silences", "list", "--all")
    assert sorted(line.split()[0] for line in listed.splitlines()) == sorted(
        [recent.silence_id, in_force.silence_id, ahead.silence_id, added.stdout.strip()]
    )

    again = _cli(settings, monkeypatch, capsys, "silences", "add", "--unit", "KNIT-86",
                 "--for", "1h", "--reason", "r")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "removed" not in again.stderr  # nothing past the retention any more
