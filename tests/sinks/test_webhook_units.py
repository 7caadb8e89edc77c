"""Webhook pieces without the network: filters, subscriptions, payloads, retries, offsets."""

from __future__ import annotations

import hashlib
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from cli_in_process import cli_in_process
from pydantic import ValidationError
from sink_samples import make_alert
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from chainwatch.notify_runner import stop_timeout_s
from chainwatch.settings import Settings
from schemas.alerts import Alert, AlertCause, AlertStatus, Severity
from schemas.plan import load_plan
from sinks.webhooks.delivery import (
    RETRY_AFTER_CAP_S,
    RetryPolicy,
    retry_after_s,
    signed_headers,
)
from sinks.webhooks.offsets import Commit, OffsetTracker
from sinks.webhooks.payloads import FORMATS, MessageIds, Seen, render
from sinks.webhooks.records import (
    MAX_RECORD_BYTES,
    MAX_STATUS_CODES,
    DeliveryLog,
    WebhookDeadLetter,
    body_of,
)
from sinks.webhooks.settings import parse_allowed_hosts
from sinks.webhooks.subscriptions import (
    MAX_ENDPOINTS,
    Filters,
    SubscriptionError,
    Subscriptions,
    host_allowed,
    load_subscriptions,
    read_subscriptions,
)
from sinks.webhooks.targets import TargetPolicy, parse_networks

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subs.yaml"
    path.write_text(text)
    return path


def test_filters_and_within_fields_or_within_lists() -> None:
    f = Filters(severities=["critical"], customer_tiers=["platinum", "gold"])
    assert f.matches(make_alert(1, severity=Severity.CRITICAL, tier="gold"))
    assert not f.matches(make_alert(1, severity=Severity.WARNING, tier="gold"))
    assert not f.matches(make_alert(1, severity=Severity.CRITICAL, tier="standard"))
    assert Filters().matches(make_alert(1))
    assert not Filters(stages=["knitting"]).matches(make_alert(1, stage="dyeing"))
    assert Filters(statuses=["resolved"]).matches(make_alert(1, AlertStatus.RESOLVED))


def test_a_units_filter_matches_the_alerts_unit_or_the_unit_that_caused_it(
    tmp_path: Path,
) -> None:
    """A floor's own endpoint: its unit's alerts, and orders' breaches its downtime caused."""
    dyeing = make_alert(1)  # at DYE-01
    assert Filters(units=["DYE-01", "KNIT-03"]).matches(dyeing)
    assert not Filters(units=["KNIT-03"]).matches(dyeing)
    cause = AlertCause(unit_id="KNIT-03", reason="power_outage", since=dyeing.deadline)
    caused = dyeing.model_copy(update={"cause": cause})
    assert Filters(units=["KNIT-03"]).matches(caused)
    before_any_unit = dyeing.model_copy(update={"unit_id": None})
    assert not Filters(units=["DYE-01"]).matches(before_any_unit)
    assert Filters().matches(before_any_unit)
    path = _write(
        tmp_path,
        f"endpoints:\n  - {{name: a, url: 'https://x.example.com/', secret: {SECRET}, "
        "filters: {units: [KNIT-03], severities: [critical]}}\n",
    )
    (endpoint,) = load_subscriptions(path).endpoints
    assert endpoint.filters.matches(caused)
    assert not endpoint.filters.matches(dyeing)
    blank = _write(tmp_path, path.read_text().replace("[KNIT-03]", "['']"))
    with pytest.raises(SubscriptionError, match="units"):
        load_subscriptions(blank)


def test_subscriptions_load_with_secret_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    path = _write(
        tmp_path,
        "endpoints:\n"
        "  - name: ops\n    url: https://hooks.example.com/x\n    secret_env: HOOK_SECRET\n"
        "    format: slack\n    filters: {severities: [critical]}\n",
    )
    subs = load_subscriptions(path, ["*.example.com"])
    assert subs.endpoints[0].signing_secret() == SECRET
    assert subs.endpoints[0].format == "slack"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("endpoints:\n  - {name: a, url: 'ftp://x.example.com/', secret: %s}\n", "http"),
        ("endpoints:\n  - {name: a, url: 'file:///etc/passwd', secret: %s}\n", "http"),
        ("endpoints:\n  - {name: a, url: 'https://evil.test/', secret: %s}\n", "not in"),
        (
            "endpoints:\n  - {name: a, url: 'https://x.example.com/', secret: nope}\n",
            "signing secret",
        ),
        ("endpoints:\n  - {name: a, url: 'https://x.example.com/'}\n", "exactly one"),
        (
            "endpoints:\n  - {name: a, url: 'https://x.example.com/', secret: %s, colour: red}\n",
            "colour",
        ),
        ("endpoints: [\n", "YAML"),
        # PyYAML's own message quotes the lines around the problem, secret included
        ("endpoints:\n  - {name: a, url: 'https://x.example.com/', secret: %s\n", "(line 3,"),
        (
            "endpoints:\n  - {name: a, url: 'https://x.example.com/', secret: %s}\nendpoints: []\n",
            "the key 'endpoints' written twice (line 3, column 1)",
        ),
        (
            "endpoints:\n  - {name: a, url: 'https://x.example.com/', secret: %s, secret: x}\n",
            "the key 'secret' written twice (line 2, column ",
        ),
        ("endpoints: []\n%s: 1\n%s: 2\n", "a key written twice (line 3, column 1)"),
    ],
)
def test_bad_subscriptions_name_the_problem_never_the_secret(
    tmp_path: Path, body: str, fragment: str
) -> None:
    path = _write(tmp_path, body.replace("%s", SECRET))
    with pytest.raises(SubscriptionError) as info:
        load_subscriptions(path, ["*.example.com"])
    assert fragment in str(info.value)
    assert SECRET not in str(info.value)


def test_two_endpoints_of_one_name_are_named_with_their_lines(tmp_path: Path) -> None:
    """It said only "endpoint names must be unique": in a file of many endpoints the
    search was yours. A name is a label that logs show, so it is named; secrets never."""
    entry = "  - {name: %s, url: 'https://x.example.com/%s', secret: " + SECRET + "}\n"
    body = "link_template: null\nendpoints:\n" + "".join(
        entry % (name, i) for i, name in enumerate(["ops", "pager", "ops", "pager", "ops", "x"])
    )
    with pytest.raises(SubscriptionError) as info:
        load_subscriptions(_write(tmp_path, body))
    assert str(info.value) == (
        f"{tmp_path / 'subs.yaml'}: endpoints: names must be unique: "
        "'ops' in endpoints.0 (line 3), endpoints.2 (line 5) and endpoints.4 (line 7); "
        "'pager' in endpoints.1 (line 4) and endpoints.3 (line 6) (rename or remove one)"
    )


def test_many_endpoints_of_one_name_are_refused_in_one_short_line(tmp_path: Path) -> None:
    """Aliases of one anchor are a few bytes each: a file of 3,000 entries of one name (and
    of 3,000 names given twice) listed every entry, a line of 100 KB. A file names at most
    `MAX_ENDPOINTS` now: as many as that, of one name (and half as many names given
    twice), are named in one short line still."""
    entry = "&e {name: ops, url: 'https://x.example.com/', secret: " + SECRET + "}"
    many = "endpoints:\n  - " + entry + "\n" + "  - *e\n" * (MAX_ENDPOINTS - 1)
    with pytest.raises(SubscriptionError) as info:
        load_subscriptions(_write(tmp_path, many))
    assert str(info.value).endswith(
        "'ops' in endpoints.0 (line 2), endpoints.1 (line 3), endpoints.2 (line 4) "
        f"and {MAX_ENDPOINTS - 3} more (rename or remove one)"
    )
    pairs = "".join(
        f"  - {{name: n{i}, url: 'https://x.example.com/', secret: {SECRET}}}\n" * 2
        for i in range(MAX_ENDPOINTS // 2)
    )
    with pytest.raises(SubscriptionError) as info:
        load_subscriptions(_write(tmp_path, "endpoints:\n" + pairs))
    assert str(info.value).endswith(
        f"'n4' in endpoints.8 (line 10) and endpoints.9 (line 11); and {MAX_ENDPOINTS // 2 - 5} "
        "more names (rename or remove one)"
    )
    assert len(str(info.value)) - len(str(tmp_path)) < 400


def _endpoints_file(tmp_path: Path, count: int) -> Path:
    entry = "  - {name: e%d, url: 'https://x.example.com/%d', secret: " + SECRET + "}\n"
    return _write(tmp_path, "endpoints:\n" + "".join(entry % (i, i) for i in range(count)))


def test_a_file_of_more_endpoints_than_a_notifier_runs_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    """Each endpoint is its own Kafka consumer, HTTP client and workers: a file of 500 made
    a notifier of 512 MB and 1,264 open files (past a default `ulimit -n` of 1024) whose
    warm-up still ran after 60 s, and nothing said why. One over `MAX_ENDPOINTS` is
    refused, naming the count and the bound; one at it loads."""
    assert len(load_subscriptions(_endpoints_file(tmp_path, MAX_ENDPOINTS)).endpoints) == 100
    with pytest.raises(SubscriptionError) as info:
        load_subscriptions(_endpoints_file(tmp_path, MAX_ENDPOINTS + 1))
    assert str(info.value) == (
        f"{tmp_path / 'subs.yaml'}: endpoints: 101 endpoints, more than the 100 a notifier "
        "runs (each is its own Kafka consumer, HTTP client and workers: its open files and "
        "memory grow with them, docs/sinks.md); split them across notifiers, a "
        "subscriptions file each"
    )
    with pytest.raises(SubscriptionError, match="endpoints: 101 endpoints, more than"):
        read_subscriptions(tmp_path / "subs.yaml")  # the listings' read (no secret checked)


@pytest.mark.parametrize("args", [["notify", "--check"], ["notify"]], ids=["check", "start"])
def test_notify_refuses_more_endpoints_than_it_runs_in_one_line_and_runs_as_many(
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At start and in `notify --check`: one line naming the count and the bound, exit 1,
    before Kafka is asked (a closed port here). `--check` of a file at the bound says ok
    for each endpoint."""
    env = {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS": str(_endpoints_file(tmp_path, MAX_ENDPOINTS + 1)),
    }
    said = cli_in_process(args, env, monkeypatch, capsys, settings_built=True)
    assert said.returncode == 1, said
    assert said.stderr == (
        f"error: {tmp_path / 'subs.yaml'}: endpoints: 101 endpoints, more than the 100 a "
        "notifier runs (each is its own Kafka consumer, HTTP client and workers: its open "
        "files and memory grow with them, docs/sinks.md); split them across notifiers, a "
        "subscriptions file each\n"
    )
    if args == ["notify", "--check"]:
        _endpoints_file(tmp_path, MAX_ENDPOINTS)
        said = cli_in_process(args, env, monkeypatch, capsys, settings_built=True)
        assert said.returncode == 0, said.stderr
        assert said.stderr.count("ok  e") == MAX_ENDPOINTS


def test_names_given_twice_are_found_in_one_pass_over_the_entries() -> None:
    """Each name was counted over the whole list: n² comparisons, minutes for the
    100,000 entries a 4 MiB file holds."""
    compared = 0

    class Name(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            nonlocal compared
            compared += 1
            return str.__eq__(self, other)

    endpoints = [SimpleNamespace(name=Name("ops" if i % 2 else f"n{i}")) for i in range(2000)]
    with pytest.raises(ValueError, match="names must be unique"):
        Subscriptions._unique_names(endpoints)  # type: ignore[arg-type]
    assert compared < 4 * len(endpoints)


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ("{types: [stage_overdu]}", "filters.types: 'stage_overdu' is no alert"),
        ("{statuses: [opened]}", "filters.statuses: 'opened' is no alert"),
        ("{customer_tiers: [platnum]}", "use gold, platinum, standard"),
        ("{severities: [bogus, critical]}", "'bogus' is no alert's value here"),
        ("{stages: [dying]}", "filters.stages: 'dying' is not a stage of the SLA plan"),
    ],
)
def test_a_filter_value_no_alert_can_have_is_refused_at_load(
    tmp_path: Path, filters: str, fragment: str
) -> None:
    """A typo in a filter made the endpoint silently receive nothing; `notify --check` said ok."""
    path = _write(
        tmp_path,
        f"endpoints:\n  - {{name: a, url: 'https://x.example.com/', secret: {SECRET}, "
        f"filters: {filters}}}\n",
    )
    with pytest.raises(SubscriptionError) as info:
        load_subscriptions(path, stages=load_plan(None).stage_duration)
    assert fragment in str(info.value)


def test_host_allow_list() -> None:
    assert host_allowed("a.example.com", ["*.example.com"])
    assert host_allowed("Example.com", ["example.com"])
    assert not host_allowed("example.com.evil.test", ["*.example.com", "example.com"])


def test_one_webhook_id_per_distinct_message() -> None:
    opened = make_alert(1)
    critical = make_alert(1, severity=Severity.CRITICAL)
    warning = make_alert(1, severity=Severity.WARNING)
    retracted = opened.model_copy(update={"status": AlertStatus.RETRACTED})
    ids = MessageIds()
    first = ids.id_for(warning, 0, 10)
    assert not first.repeat
    # the engine re-published it unchanged: a repeat, under the same id
    assert ids.id_for(warning, 0, 11) == Seen(first.msg_id, repeat=True)
    escalated = ids.id_for(critical, 0, 12)  # severity change: a new message
    gone = ids.id_for(retracted, 0, 13)
    reopened = ids.id_for(critical, 0, 14)  # the same content as offset 12, re-opened
    assert not any(s.repeat for s in (escalated, gone, reopened))
    assert len({first.msg_id, escalated.msg_id, gone.msg_id, reopened.msg_id}) == 4
    # a restart re-reads the same records: the same ids, and none is a repeat
    again = MessageIds()
    assert [again.id_for(a, 0, o) for a, o in [(warning, 10), (critical, 12)]] == [
        first,
        escalated,
    ]
    assert MessageIds().id_for(critical, 0, 14) == reopened  # from a committed offset on
    assert ids.id_for(critical, 0, 14) == reopened  # the same record read again: no repeat
    # other alerts never share an id; a forgotten alert only costs a new id
    assert ids.id_for(make_alert(2), 0, 14).msg_id != reopened.msg_id
    small = MessageIds(capacity=1)
    small.id_for(warning, 0, 10)
    small.id_for(make_alert(2), 0, 11)
    assert small.id_for(warning, 0, 12) == Seen(message_id_of(warning, 0, 12), repeat=False)


def message_id_of(alert: Alert, partition: int, offset: int) -> str:
    return MessageIds().id_for(alert, partition, offset).msg_id


def test_forgetting_a_partition_forgets_only_its_alerts() -> None:
    """A partition read again from its committed position (a rebalance) must not be judged
    by what this process read of it beyond that position."""
    ids = MessageIds()
    ids.id_for(make_alert(1), 0, 10)
    ids.id_for(make_alert(2), 1, 10)
    ids.forget(0)
    assert not ids.id_for(make_alert(1), 0, 11).repeat
    assert ids.id_for(make_alert(2), 1, 11).repeat


def test_body_is_deterministic() -> None:
    opened, again, resolved = make_alert(1), make_alert(1), make_alert(1, AlertStatus.RESOLVED)
    assert render(opened, "json")[1] == render(again, "json")[1]
    payload = json.loads(render(resolved, "json")[1])
    assert payload["type"] == "alert.resolved"
    assert payload["data"]["alert_id"] == opened.alert_id
    slack = json.loads(render(opened, "slack")[1])
    assert "stage_overdue" in slack["text"]
    assert "PO-1" in slack["text"]


def _strict_json(text: str) -> Any:
    """`json.loads` minus the extensions: `NaN`, `Infinity` and `-Infinity` are no JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_body_is_valid_json_or_not_built_at_all(value: float) -> None:
    """No alert reaches here with a non-finite number (the model refuses it), but should
    one be built past validation, no format may send `Infinity` or `NaN`."""
    assert _strict_json(body_of({"lateness_s": 1.5, "n": [1, None]}))
    with pytest.raises(ValueError, match="JSON compliant"):
        body_of({"data": {"lateness_s": value}})
    # alerts built without validation, as `model_copy` and `model_construct` do
    alert = make_alert(1)
    late = alert.model_copy(update={"lateness_s": value})
    with pytest.raises(ValueError, match="JSON compliant"):
        render(late, "standard")  # was sent as `"lateness_s":Infinity`
    for poisoned in (late, alert.model_copy(update={"details": {"x": [value]}})):
        for fmt in FORMATS:  # refused (`duration()` raises too), or valid JSON
            try:
                body = render(poisoned, fmt)[1]
            except (ValueError, OverflowError):
                continue
            _strict_json(body)


def test_signature_verifies_with_standardwebhooks() -> None:
    body = render(make_alert(2), "json")[1]
    headers = signed_headers(Webhook(SECRET), "msg_1", body, datetime.now(UTC))
    assert Webhook(SECRET).verify(body, headers)["type"] == "alert.open"
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("open", "shut"), headers)


def test_backoff_doubles_with_jitter_and_caps() -> None:
    policy = RetryPolicy(initial_backoff_s=1, max_backoff_s=8)
    rng = random.Random(1)
    for attempt, base in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        delay = policy.backoff(attempt, rng)
        assert 0.5 * base <= delay <= 1.5 * base


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Mon, 01 Mar 2027 12:00:30 GMT", now) == 30.0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


@pytest.mark.parametrize(
    "value",
    [
        "²",  # "²".isdigit() is true; float("²") raised and ended the endpoint's worker
        "1²",
        "١٢",  # Arabic-Indic digits: float() reads them, HTTP does not
        "\uff17",  # fullwidth 7
        "+7",
        "-1",
        "7.5",
        "1e3",
        "0x10",
        "7 s",
        "",
        "   ",
        "Mon, 32 Mar 2027 12:00:30 GMT",
        "Mon, 01 Mar 99999 12:00:30 GMT",
        "Mon, 01 Mar 2027 12:00:30 +9999",
        "Mon, 01 Mar 2027 12:00:30 GMT²",
    ],
)
def test_retry_after_other_than_ascii_digits_or_an_http_date_is_ignored(value: str) -> None:
    assert retry_after_s(value, datetime(2027, 3, 1, 12, 0, tzinfo=UTC)) is None


def test_retry_after_is_capped_and_never_negative() -> None:
    now = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    assert retry_after_s(" 7\t") == 7.0
    assert retry_after_s("9" * 5000) == RETRY_AFTER_CAP_S  # float() of it is inf
    assert retry_after_s("Fri, 31 Dec 9999 23:59:59 GMT", now) == RETRY_AFTER_CAP_S
    assert retry_after_s("Mon, 01 Mar 2027 11:00:00 GMT", now) == 0.0  # in the past


def test_offsets_commit_below_the_lowest_pending_delivery() -> None:
    tp = TopicPartition("alerts", 0)
    tracker = OffsetTracker()
    tracker.consumed(tp, 0, 2)
    tracker.consumed(tp, 1, 0)
    tracker.consumed(tp, 2, 1)
    # held at 0; 1 needed no delivery: finished, the commit's metadata says so (done.py)
    assert tracker.committable() == {tp: (0, "d2:0:1")}
    tracker.done(tp, 2)
    tracker.done(tp, 0)
    # still at 0, but 1 and 2 are done above it
    assert tracker.committable() == {tp: (0, "d2:0:1.2")}
    tracker.committed({tp: Commit(0, "d2:0:1.2")})
    assert tracker.committable() == {}  # nothing changed since
    tracker.done(tp, 0)
    assert tracker.committable() == {tp: (3, "")}
    assert tracker.committable() == {tp: (3, "")}  # a commit that failed is offered again
    tracker.committed({tp: Commit(3, "")})
    assert tracker.committable() == {}  # not once Kafka took it
    assert tracker.idle()
    tracker.forget(tp)
    tracker.done(tp, 0)  # late completion after revocation: ignored


def test_the_shipped_example_subscriptions_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHAINWATCH_HOOK_OPS", "CHAINWATCH_HOOK_DYEING", "CHAINWATCH_PAGERDUTY_KEY"):
        monkeypatch.setenv(name, SECRET)
    example = Path(__file__).resolve().parents[2] / "deploy/webhooks/subscriptions.example.yaml"
    subs = load_subscriptions(
        example,
        ["*.example.com", "hooks.slack.com", "events.pagerduty.com"],
        stages=load_plan(None).stage_duration,  # its filters name stages of the default plan
    )
    assert [e.name for e in subs.endpoints] == [
        "ops-pager",
        "key-accounts-slack",
        "dyeing-floor",
        "on-call",
    ]


def test_delivery_log_and_dead_letter_records_stay_under_the_message_limit() -> None:
    now = datetime.now(UTC)
    entry = DeliveryLog(
        webhook_id="msg_1", alert_id="a", alert_status="open", alert_type="stage_overdue",
        endpoint="e", url_host="h", outcome="gave_up", attempts=10_000,
        status_codes=[429] * 10_000, last_error="x" * 2_000_000,
        first_attempt_at=now, finished_at=now, latency_ms=1.0,
    )  # fmt: skip
    assert len(entry.model_dump_json()) < 10_000
    assert entry.attempts == 10_000
    assert len(entry.status_codes) == MAX_STATUS_CODES
    payload = {"data": {"details": {"blob": "y" * 2_000_000}}}
    letter = WebhookDeadLetter(
        dead_letter_id="d", webhook_id="msg_1", endpoint="e", url_host="h", alert_id="a",
        reason="z" * 2_000_000, attempts=3, status_codes=[503] * 3, payload=payload,
        failed_at=now,
    )  # fmt: skip
    encoded = letter.model_dump_json().encode()
    assert len(encoded) <= MAX_RECORD_BYTES
    assert letter.payload_truncated
    sent = body_of(payload).encode()
    assert (letter.payload_bytes, letter.payload_sha256) == (
        len(sent),
        hashlib.sha256(sent).hexdigest(),
    )
    small = letter.model_copy(update={"payload": {"a": 1}})
    assert WebhookDeadLetter.model_validate_json(small.model_dump_json()) == small


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/",
        "http://[::1]/x", "http://0.0.0.0/", "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/",
    ],
)  # fmt: skip
def test_subscriptions_refuse_non_public_addresses_unless_allowed(tmp_path: Path, url: str) -> None:
    path = _write(tmp_path, f"endpoints:\n  - {{name: a, url: '{url}', secret: {SECRET}}}\n")
    with pytest.raises(SubscriptionError) as info:
        load_subscriptions(path)
    assert "ALLOWED_NETWORKS" in str(info.value)
    everything = TargetPolicy(parse_networks("0.0.0.0/0,::/0"))
    assert load_subscriptions(path, targets=everything).endpoints[0].name == "a"


@pytest.mark.parametrize(
    ("value", "hosts"),
    [
        (" hooks.example.com , *.slack.com", ["hooks.example.com", "*.slack.com"]),
        ("hooks.example.com,,*.slack.com,", ["hooks.example.com", "*.slack.com"]),
        ("", []),  # unset: every host
    ],
)
def test_allowed_hosts_setting_drops_spaces_and_empty_entries(value: str, hosts: list[str]) -> None:
    settings = Settings(webhooks={"allowed_hosts": value})
    assert parse_allowed_hosts(settings.webhooks.allowed_hosts) == hosts


@pytest.mark.parametrize("value", [",", " , ", " "])
def test_allowed_hosts_setting_that_names_no_host_is_refused(value: str) -> None:
    """Read as no list, it allowed every host: an allow-list set by a template whose list
    came out empty (`${HOSTS},`) restricted nothing, silently."""
    with pytest.raises(ValidationError, match=r"names no host.*unset it to allow every host"):
        Settings(webhooks={"allowed_hosts": value})


def test_allowed_networks_setting_is_checked_at_start_up() -> None:
    assert Settings(webhooks={"allowed_networks": "10.20.0.0/16, 127.0.0.1"})
    with pytest.raises(ValidationError, match="not a network"):
        Settings(webhooks={"allowed_networks": "10.20.0.0/16, intranet"})


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://hooks.example.com:65536/T0/SECRETPATH", "port out of range"),
        ("https://hooks.example.com:abc/T0/SECRETPATH", "not a valid URL"),
        ("https://hooks.example.com:0/T0/SECRETPATH", "port 0"),
        ("https://hooks.example.com/T0/SECRETPATH\x00", "a control character"),
        ("https://bot:SECRET\x01PATH@hooks.example.com/T0", "a control character"),
        ("https://bot:SECRETPATH@\uff11\uff12\uff17x.example/T0", "no valid international"),
        (f"https://hooks.example.com/T0/SECRETPATH/{'a' * 65536}", "longer than 65,536"),
        ("https://hooks..example.com/T0/SECRETPATH", "no DNS name"),
        ("https://hooks example.com/T0/SECRETPATH", "no DNS name"),
        (f"https://{'h' * 64}.example.com/T0/SECRETPATH", "no DNS name"),
        ("https://bot:SECRETPATH@hooks.example.com\u2101/T0", "normalise to URL delimiters"),
        # 235 characters as written, 319 IDNA-encoded (`xn--bcherbcherbcher-zvbff` each)
        (
            f"https://{'.'.join(['bücher' * 3] * 12)}.example/SECRETPATH",
            "no DNS name",
        ),
        ("https://bot:SECRETPATH@[::1/T0", "bad IPv6 literal"),
        ("https://bot:SECRETPATH@hooks.example.com:x1/T0", "port not a number"),
        ("https://bot:SECRETPATH@127.1/T0", "no IPv4 address"),
        ("https://bot:SECRETPATH@1.2.3.4.5/T0", "no IPv4 address"),
        # an `xn--` label that is no IDNA 2008 A-label: httpx raised IDNAError per request
        ("https://bot:SECRETPATH@xn--ls8h.example/T0", "no valid international"),
        ("https://bot:SECRETPATH@xn--127-1.example/T0", "no valid international"),
        ("https://bot:SECRETPATH@XN--abc.example/T0", "no valid international"),
    ],
)
def test_a_url_the_sender_cannot_use_is_refused_at_load(
    tmp_path: Path, url: str, fragment: str
) -> None:
    """Such URLs passed `notify --check` and failed every delivery (a trace per alert,
    or an hour of retries each); the message names the problem, never the URL."""
    path = tmp_path / "subs.yaml"
    path.write_text(
        json.dumps({"endpoints": [{"name": "a", "url": url, "format": "slack"}]}), "utf-8"
    )
    with pytest.raises(SubscriptionError, match=r"endpoints\.0: url ") as info:
        load_subscriptions(path)
    assert fragment in str(info.value)
    # nor a part of it, nor where it is: httpx's `'\x01' at position 15` fell in the password
    assert not any(s in str(info.value) for s in ("SECRET", "position", "'", "example"))


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("https://grafana.example.com/d/cw-order?o={order_id!r}", "link_template: {order_id...}"),
        ("ftp://grafana.example.com/{order_id}", "link_template must be an http:// or https://"),
    ],
)
def test_a_bad_file_wide_link_template_is_named_where_it_is_written(
    tmp_path: Path, template: str, said: str
) -> None:
    """Before: `endpoints.0: Value error, link_template: ...` for a template written at
    the top of the file, where the first endpoint has none."""
    path = tmp_path / "subs.yaml"
    endpoint = {"name": "a", "url": "https://hooks.example.com/x", "format": "slack"}
    path.write_text(json.dumps({"link_template": template, "endpoints": [endpoint]}), "utf-8")
    with pytest.raises(SubscriptionError) as info:
        load_subscriptions(path)
    assert str(info.value).startswith(f"{path}: {said}"), str(info.value)
    assert "endpoints" not in str(info.value)
    assert "Value error" not in str(info.value)


def test_an_international_host_name_is_a_usable_url(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "endpoints:\n  - {name: a, url: 'https://bücher.example/x', format: slack}\n"
    )
    assert load_subscriptions(path).endpoints[0].host == "bücher.example"


@pytest.mark.parametrize(
    "field",
    [
        "timeout_s", "initial_backoff_s", "max_backoff_s", "retry_horizon_s",
        "min_retry_after_s", "max_retry_after_s", "warmup_timeout_s",
    ],
)  # fmt: skip
@pytest.mark.parametrize("value", [math.inf, 1e300])
def test_every_webhook_duration_is_bounded(field: str, value: float) -> None:
    """`timeout_s=inf` was taken: a hanging receiver's post, and the stop, had no deadline
    (the stop-deadline thread died on an OverflowError)."""
    with pytest.raises(ValidationError, match=field):
        Settings(webhooks={field: value})


def test_a_webhook_timeout_past_ten_minutes_is_refused_so_a_stop_waits_under_eleven() -> None:
    """The notifier's stop waits for the posts under way (`stop_timeout_s`): the bound on
    `timeout_s` is what keeps that wait short (threading.TIMEOUT_MAX, ~292 years, did not)."""
    with pytest.raises(ValidationError, match="timeout_s"):
        Settings(webhooks={"timeout_s": 600.5})
    assert stop_timeout_s(Settings(webhooks={"timeout_s": 600})) < 11 * 60


@pytest.mark.parametrize(
    ("low", "high"),
    [("min_retry_after_s", "max_retry_after_s"), ("initial_backoff_s", "max_backoff_s")],
)
def test_a_lower_bound_above_its_upper_one_is_refused(low: str, high: str) -> None:
    """`RetryPolicy` takes the upper one: the lower one was silently never used."""
    with pytest.raises(ValidationError, match=rf"{low} \(600\) is above {high} \(300\)"):
        Settings(webhooks={low: 600, high: 300})
    assert Settings(webhooks={low: 300, high: 300})
