"""Slack, Teams and PagerDuty payloads: the documented required fields of each target.

The field lists are those cited in `sinks/webhooks/formats.py`; the checks
(webhook_format_checks.py) are also what the integration receiver
(test_webhook_delivery.py) applies to each request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sink_samples import make_alert
from webhook_format_checks import check_pagerduty, check_slack, check_teams

from schemas.alerts import AlertCause, AlertStatus, AlertType, Severity
from sinks.webhooks.formats import (
    DEFAULT_LINK_TEMPLATE,
    LINK_MAX,
    PAGERDUTY_URL,
    REDACTED,
    duration,
    order_link,
    pagerduty_event,
    slack_message,
    teams_message,
)
from sinks.webhooks.payloads import render
from sinks.webhooks.subscriptions import Endpoint, SubscriptionError, load_subscriptions

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy/webhooks"


# --- Slack -------------------------------------------------------------------------


def test_slack_message_has_the_fields_slack_requires_and_what_ops_need() -> None:
    alert = make_alert(1).model_copy(update={"lateness_s": 7500.0})
    message = slack_message(alert)
    assert check_slack(message) == []
    text = json.dumps(message)
    for wanted in ("stage_overdue", "PO-1", "dyeing", "Nordic Knits AB", "platinum",
                   "2 h 05 min", alert.alert_id):  # fmt: skip
        assert wanted in text
    assert "Deadline" in text
    button = message["blocks"][2]["elements"][0]
    assert button["url"] == "http://localhost:3000/d/cw-order/order-drill-down?var-order_id=PO-1"


def test_slack_clips_to_the_documented_limits() -> None:
    alert = make_alert(1).model_copy(update={"stage": "s" * 400})
    message = slack_message(alert)
    assert check_slack(message) == []
    assert len(message["blocks"][0]["text"]["text"]) == 150


HOSTILE_NAME = (
    "<!channel> <https://evil.example/x|Log in again> [Log in](https://evil.example) "
    "&amp; \u202eevil\u0000\x1b[2Jend"
)


def _hostile() -> Any:
    alert = make_alert(1)
    assert alert.customer is not None
    customer = alert.customer.model_copy(update={"name": HOSTILE_NAME})
    return alert.model_copy(update={"customer": customer})


def test_a_customer_name_cannot_ping_a_channel_or_hide_a_link_in_slack() -> None:
    """A CRM record is input: its name went into Slack's mrkdwn as it came, so a name
    `<!channel> <https://evil|Log in>` pinged the channel and showed a disguised link."""
    message = slack_message(_hostile())
    assert check_slack(message) == []
    field = next(f["text"] for f in message["blocks"][1]["fields"] if "Customer" in f["text"])
    for text in (field, message["text"]):
        assert "<" not in text
        assert "&lt;!channel&gt; &lt;https://evil.example/x|Log in again&gt;" in text
        assert "&amp;amp;" in text  # an entity in the name is shown as written
        assert not {"\u202e", "\x00", "\x1b"} & set(text)


def test_a_customer_name_cannot_make_a_link_in_teams() -> None:
    card = teams_message(_hostile())["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert "\\[Log in\\](https://evil.example)" in facts["Customer"]
    assert not {"\u202e", "\x1b"} & set(facts["Customer"])
    assert facts["Order"] == "PO-1"  # identifiers are shown as they are


def test_unit_alerts_have_no_order_link() -> None:
    alert = make_alert(1).model_copy(
        update={"type": AlertType.UNIT_DOWN, "order_id": None, "stage": None, "customer": None}
    )
    assert order_link(alert) is None
    for message, check in (
        (slack_message(alert), check_slack),
        (teams_message(alert), check_teams),
    ):
        assert check(message) == []
        assert "DYE-01" in json.dumps(message)
        assert "http" not in json.dumps({k: v for k, v in message.items() if k != "attachments"})
    assert "actions" not in teams_message(alert)["attachments"][0]["content"]


def test_link_template_is_url_encoded_and_checked() -> None:
    alert = make_alert(1).model_copy(update={"order_id": "PO 1/&x"})
    link = order_link(alert, "https://grafana.example.com/d/cw-order/x?var-order_id={order_id}")
    assert link == "https://grafana.example.com/d/cw-order/x?var-order_id=PO%201%2F%26x"
    with pytest.raises(ValidationError, match="link_template"):
        Endpoint(name="s", url="https://hooks.slack.com/x", format="slack", link_template="{oops}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "template",
    [
        "http://g/{order_id:>3000000000}",  # a 3 GB string for every alert delivered
        "http://g/{order_id!r}",
        "http://g/{order_id.__class__}",
        "http://g/{order_id[0]}",
        "http://g/{order_id:{stage}}",
        "http://g/{order_id",
    ],
)
@pytest.mark.timeout(10)
def test_a_link_template_takes_plain_placeholders_only(template: str) -> None:
    with pytest.raises(ValidationError, match="link_template") as caught:
        Endpoint(name="s", url="https://hooks.slack.com/x", format="slack", link_template=template)  # type: ignore[arg-type]
    assert len(str(caught.value)) < 1000


def test_the_default_link_matches_the_drilldown_dashboard() -> None:
    from dashboards.drilldown import UID, order_variable

    assert f"/d/{UID}/" in DEFAULT_LINK_TEMPLATE
    assert f"var-{order_variable().build().name}=" in DEFAULT_LINK_TEMPLATE


# --- Teams -------------------------------------------------------------------------


def test_teams_message_is_an_adaptive_card_with_facts_and_link() -> None:
    alert = make_alert(2, AlertStatus.OPEN).model_copy(
        update={"cause": AlertCause(unit_id="DYE-02", reason="pump", since=make_alert(2).deadline)}
    )
    message = teams_message(alert)
    assert check_teams(message) == []
    card = message["attachments"][0]["content"]
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Order"] == "PO-2"
    assert facts["Customer"] == "Nordic Knits AB (platinum)"
    assert facts["Cause"] == "unit DYE-02 pump"
    assert card["actions"][0]["url"].endswith("var-order_id=PO-2")


# --- PagerDuty ---------------------------------------------------------------------


def test_pagerduty_triggers_on_open_and_resolves_on_resolved_or_retracted() -> None:
    opened = pagerduty_event(make_alert(3), ROUTING_KEY)
    assert check_pagerduty(opened) == []
    assert opened["event_action"] == "trigger"
    assert opened["dedup_key"] == make_alert(3).alert_id
    assert opened["routing_key"] == ROUTING_KEY
    assert opened["payload"]["severity"] == "critical"
    assert opened["payload"]["component"] == "dyeing"
    assert opened["links"][0]["href"].endswith("var-order_id=PO-3")
    for status in (AlertStatus.RESOLVED, AlertStatus.RETRACTED):
        ended = pagerduty_event(make_alert(3, status), ROUTING_KEY)
        assert check_pagerduty(ended) == []
        assert ended == {
            "routing_key": ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": make_alert(3).alert_id,
        }


@pytest.mark.parametrize(
    ("severity", "expected"), [(Severity.CRITICAL, "critical"), (Severity.WARNING, "warning")]
)
def test_pagerduty_severity_is_mapped(severity: Severity, expected: str) -> None:
    event = pagerduty_event(make_alert(1, severity=severity), ROUTING_KEY)
    assert event["payload"]["severity"] == expected


def test_the_routing_key_is_sent_but_never_kept() -> None:
    kept, body = render(make_alert(4), "pagerduty", routing_key=ROUTING_KEY)
    assert json.loads(body)["routing_key"] == ROUTING_KEY
    assert kept["routing_key"] == REDACTED
    assert ROUTING_KEY not in json.dumps(kept)


def test_every_format_renders_deterministically() -> None:
    for fmt in ("standard", "slack", "teams", "pagerduty"):
        first = render(make_alert(5), fmt, routing_key=ROUTING_KEY)[1]
        assert first == render(make_alert(5), fmt, routing_key=ROUTING_KEY)[1]


def test_duration_reads_like_people_write_it() -> None:
    assert [duration(s) for s in (30, 2700, 7500, 93600, -60)] == [
        "30 s", "45 min", "2 h 05 min", "1 d 2 h", "-1 min",
    ]  # fmt: skip


# --- subscriptions ----------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subs.yaml"
    path.write_text(text)
    return path


def test_pagerduty_subscription_defaults_its_url_and_reads_its_key_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PD_KEY", ROUTING_KEY)
    path = _write(
        tmp_path,
        "link_template: https://grafana.example.com/d/cw-order/o?var-order_id={order_id}\n"
        "endpoints:\n  - {name: pd, format: pagerduty, routing_key_env: PD_KEY}\n"
        "  - {name: s, format: slack, url: 'https://hooks.slack.com/services/T/B/X'}\n"
        "  - {name: std, format: json, url: 'https://hooks.example.com/', secret: "
        + SECRET
        + "}\n",
    )
    subs = load_subscriptions(path)
    pd, slack, std = subs.endpoints
    assert pd.url.get_secret_value() == PAGERDUTY_URL
    assert pd.pagerduty_routing_key() == ROUTING_KEY
    assert not pd.signed
    assert not slack.signed
    assert std.format == "standard"  # `json` is its former name
    assert std.signed
    assert slack.link_template.startswith("https://grafana.example.com/")
    assert ROUTING_KEY not in repr(subs)


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("{name: pd, format: pagerduty}", "routing_key"),
        ("{name: pd, format: pagerduty, routing_key_env: UNSET_PD_KEY}", "UNSET_PD_KEY"),
        # PagerDuty refused (400) every alert of these: refused at load instead
        ("{name: pd, format: pagerduty, routing_key: ''}", "routing_key is no PagerDuty"),
        ("{name: pd, format: pagerduty, routing_key: ' '}", "routing_key is no PagerDuty"),
        (
            "{name: pd, format: pagerduty, routing_key_env: SPACED_PD_KEY}",
            "SPACED_PD_KEY is no PagerDuty",
        ),
        ("{name: s, format: slack, url: 'https://h.example.com/', routing_key: k}", "pagerduty"),
        ("{name: s, url: 'https://h.example.com/'}", "signed"),
        ("{name: s, format: discord, url: 'https://h.example.com/'}", "format"),
    ],
)
def test_bad_format_settings_are_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str, fragment: str
) -> None:
    monkeypatch.setenv("SPACED_PD_KEY", ROUTING_KEY + "\n")  # a file's newline
    with pytest.raises(SubscriptionError, match=fragment) as caught:
        load_subscriptions(_write(tmp_path, f"endpoints:\n  - {endpoint}\n"))
    assert ROUTING_KEY not in str(caught.value)


@pytest.mark.parametrize("fmt", ["standard", "slack", "teams", "pagerduty"])
def test_the_shipped_example_file_of_each_format_loads(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CHAINWATCH_HOOK_OPS", "CHAINWATCH_PAGERDUTY_KEY"):
        monkeypatch.setenv(name, SECRET if name.endswith("OPS") else ROUTING_KEY)
    subs = load_subscriptions(DEPLOY / f"{fmt}.example.yaml")
    assert {e.format for e in subs.endpoints} == {fmt}


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("", "http:// or https:// URL with a host"),
        ("grafana.example.com/d/cw-order?o={order_id}", "http:// or https:// URL with a host"),
        ("javascript:alert({order_id})", "http:// or https:// URL with a host"),
        ("https:///d/cw-order?o={order_id}", "http:// or https:// URL with a host"),
        ("https://g.example.com:99999/?o={order_id}", "not a valid URL (port out of range"),
        ("https://10.1/?o={order_id}", "not a valid URL (a numeric host that is no IPv4"),
        ("https://g.example.com/?o={order_id}" + "&x={alert_id}" * 15, "Slack takes at most"),
    ],
)
def test_a_link_template_is_an_http_url_slack_takes(template: str, says: str) -> None:
    """Slack and Teams answer 400 to a message whose button is no URL (or, Slack, one past
    3,000 characters): every order alert of such an endpoint was given up."""
    with pytest.raises(ValidationError, match="link_template") as caught:
        Endpoint(name="s", url="https://hooks.slack.com/x", format="slack", link_template=template)  # type: ignore[arg-type]
    assert says in str(caught.value)


def test_the_longest_link_an_accepted_template_makes_fits_slack() -> None:
    template = "https://g.example.com/?o={order_id}" + "&x={alert_id}" * 14
    Endpoint(name="s", url="https://hooks.slack.com/x", format="slack", link_template=template)  # type: ignore[arg-type]
    alert = make_alert(1).model_copy(update={"order_id": ":" * 64, "alert_id": ":" * 64})
    link = order_link(alert, template)
    assert link is not None
    assert len(link) <= LINK_MAX
