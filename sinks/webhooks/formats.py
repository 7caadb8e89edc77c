"""Payloads for the receivers ops teams already use: Slack, Microsoft Teams, PagerDuty.

Pure functions of the alert (and of the subscription's link template and, for
PagerDuty, its routing key): no clock, no I/O, the same alert gives the same
body, so a retry or a re-delivery sends exactly what the first attempt sent.

Required fields, per target (what `tests/sinks/test_webhook_formats.py` and the
integration receiver check):

- Slack incoming webhook (https://api.slack.com/messaging/webhooks,
  https://api.slack.com/reference/block-kit/blocks): a JSON object with `text`
  (the notification fallback, required when `blocks` are sent) and `blocks`, at
  most 50. A `header` block has `text` as `plain_text` of at most 150 chars; a
  `section` block has `text` (at most 3000 chars) or `fields` (at most 10
  `mrkdwn`/`plain_text` objects, each at most 2000 chars); an `actions` block
  has `elements` (at most 25), a `button` having `text` (`plain_text`, at most
  75 chars), `action_id` (at most 255) and `url` (at most 3000 chars).
- Microsoft Teams workflow webhook ("When a Teams webhook request is received",
  https://learn.microsoft.com/microsoftteams/platform/task-modules-and-cards/cards/cards-reference):
  `{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": <card>}]}`; the card
  (https://adaptivecards.io/explorer/AdaptiveCard.html) has `type:
  "AdaptiveCard"`, `version` (Teams renders up to 1.5; 1.4 is sent), `$schema`
  and `body`; a `TextBlock` needs `text`, a `FactSet` needs `facts` of
  `{title, value}`, an `Action.OpenUrl` needs `url`.
- PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/,
  .../resolve-events/): POST https://events.pagerduty.com/v2/enqueue with
  `routing_key` (32-char integration key) and `event_action` (`trigger` |
  `acknowledge` | `resolve`); `dedup_key` (at most 255 chars) is required to
  resolve; a trigger needs `payload` with `summary` (at most 1024 chars),
  `source` and `severity` (`critical` | `error` | `warning` | `info`);
  optional `timestamp`, `component`, `group`, `class`, `custom_details`,
  `links` (`href`, `text`), `client`, `client_url`.

`trigger` for an open alert, `resolve` for a resolved or retracted one, always
with `dedup_key` = `alert_id`, so PagerDuty folds the re-publishes of one alert
into one incident and closes it when the alert ends.
"""

from __future__ import annotations

import string
import unicodedata
from typing import Any
from urllib.parse import quote

from schemas.alerts import Alert, AlertStatus, Severity
from schemas.common import format_utc
from schemas.text import shorten
from schemas.urls import UrlError, split_url

DEFAULT_LINK_TEMPLATE = "http://localhost:3000/d/cw-order/order-drill-down?var-order_id={order_id}"
"""The order drill-down dashboard (dashboards/drilldown.py, uid `cw-order`, variable
`order_id`); a subscription sets its own Grafana address with `link_template`."""

LINK_FIELDS = ("order_id", "alert_id", "stage", "unit_id", "customer_id")
"""Placeholders a link template may use; each is URL-encoded."""

LINK_MAX = 3000
"""Characters of a link at most: Slack refuses a button whose `url` is longer."""
_LONGEST_VALUE = quote(":" * 64, safe="")
"""A placeholder's longest URL-encoded value: an id of 64 characters, each encoded."""

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SEVERITY: dict[Severity, str] = {
    Severity.CRITICAL: "critical",
    Severity.WARNING: "warning",
}
"""Alert severity → PagerDuty severity; anything else (none today) is `info`."""

REDACTED = "<redacted>"
SLACK_HEADER_MAX = 150
SLACK_FIELD_MAX = 2000
SLACK_TEXT_MAX = 3000
PAGERDUTY_SUMMARY_MAX = 1024


def check_link_template(template: str) -> None:
    """Raise ValueError for a template with anything but plain `{field}` placeholders of
    `LINK_FIELDS`: a format spec (`{order_id:>3000000000}` built a 3 GB string per
    alert), a conversion or an attribute lookup has no place in a link. And for one
    that is no http(s) URL with a host, or whose link may pass `LINK_MAX`: Slack and
    Teams refuse (400) a message whose button is not a URL, so every order alert of
    the endpoint was given up."""
    use = f"use {', '.join('{' + f + '}' for f in LINK_FIELDS)}"
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise ValueError(f"link_template: bad braces ({exc}); {use}") from None
    for name, spec, conversion in fields:
        if name not in LINK_FIELDS or spec or conversion:
            shown = shorten(name, 40)
            raise ValueError(f"link_template: {{{shown}...}} is not a plain placeholder; {use}")
    longest = template.format(**dict.fromkeys(LINK_FIELDS, _LONGEST_VALUE))
    try:
        parts, _ = split_url(longest, dotted_ipv4_only=True)
    except UrlError as exc:  # its fault (a port out of range, `127.1`), not "no URL"
        raise ValueError(f"link_template is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Slack and Teams refuse a message whose button is no URL: every alert given up
        raise ValueError("link_template must be an http:// or https:// URL with a host")
    if len(longest) > LINK_MAX:
        raise ValueError(
            f"link_template: a link may be {len(longest)} characters with 64-character ids; "
            f"Slack takes at most {LINK_MAX}"
        )


def order_link(alert: Alert, template: str = DEFAULT_LINK_TEMPLATE) -> str | None:
    """The drill-down link of the alert's order; None for unit alerts (no order)."""
    if not alert.order_id:
        return None
    values = {
        "order_id": alert.order_id,
        "alert_id": alert.alert_id,
        "stage": alert.stage or "",
        "unit_id": alert.unit_id or "",
        "customer_id": alert.customer.customer_id if alert.customer else "",
    }
    return template.format(**{k: quote(v, safe="") for k, v in values.items()})


def printable(text: str) -> str:
    """Free text from the input (a CRM customer's name) without control and format
    characters: a NUL, an escape sequence or a right-to-left override (U+202E) in a
    name must not reorder or hide what an operator reads in a notification."""
    return "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf"))


def slack_escaped(text: str) -> str:
    """Slack's mrkdwn escaping (https://api.slack.com/reference/surfaces/formatting):
    `<!channel>` or `<https://x|Log in>` in a customer's name would ping a channel
    or show a disguised link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def teams_escaped(text: str) -> str:
    """The Markdown an Adaptive Card renders in a `Fact.Value` (links `[text](url)`,
    bold, italics) made literal with CommonMark's backslash escapes: a customer's
    name must not become a link in a notification."""
    return "".join("\\" + c if c in "\\[]*_`" else c for c in text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(seconds: float) -> str:
    """`2 h 05 min`, `45 min`, `30 s`: lateness as people read it."""
    total = round(abs(seconds))
    sign = "-" if seconds < 0 else ""
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        days, hours = divmod(hours, 24)
        return f"{sign}{days} d {hours} h"
    if hours:
        return f"{sign}{hours} h {minutes:02d} min"
    if minutes:
        return f"{sign}{minutes} min"
    return f"{sign}{secs} s"


def subject(alert: Alert) -> str:
    return f"order {alert.order_id}" if alert.order_id else f"unit {alert.unit_id}"


def title(alert: Alert) -> str:
    """`CRITICAL stage_overdue open: order PO-1 at dyeing`."""
    where = f" at {alert.stage}" if alert.stage else ""
    if alert.visit and alert.visit > 1:
        where += f" (visit {alert.visit})"
    return (
        f"{alert.severity.value.upper()} {alert.type.value} {alert.status.value}: "
        f"{subject(alert)}{where}"
    )


def facts(alert: Alert) -> list[tuple[str, str]]:
    """The lines every format shows: (label, value), empty values left out."""
    rows: list[tuple[str, str]] = [
        ("Type", alert.type.value),
        ("Status", alert.status.value),
        ("Severity", alert.severity.value),
    ]
    if alert.order_id:
        rows.append(("Order", alert.order_id))
    if alert.stage:
        stage = (
            alert.stage if not alert.visit or alert.visit == 1 else f"{alert.stage} #{alert.visit}"
        )
        rows.append(("Stage", stage))
    if alert.unit_id:
        rows.append(("Unit", alert.unit_id))
    if alert.customer is not None:
        rows.append(("Customer", f"{customer_name(alert)} ({alert.customer.tier})"))
    rows.append(("Deadline", format_utc(alert.deadline)))
    if alert.lateness_s is not None:
        rows.append(("Lateness", duration(alert.lateness_s)))
    if alert.cause is not None:
        rows.append(("Cause", f"unit {alert.cause.unit_id} {alert.cause.reason or 'down'}"))
    return rows


def customer_name(alert: Alert) -> str:
    """The customer as shown: the CRM name (free text, made printable) or the id."""
    assert alert.customer is not None
    name = alert.customer.name
    return printable(name) if name else alert.customer.customer_id


# --- Slack --------------------------------------------------------------------


def slack_message(alert: Alert, link_template: str = DEFAULT_LINK_TEMPLATE) -> dict[str, Any]:
    """A Slack incoming-webhook message: fallback `text` and Block Kit `blocks`."""
    icon = {AlertStatus.OPEN: ":rotating_light:", AlertStatus.RESOLVED: ":white_check_mark:"}.get(
        alert.status, ":information_source:"
    )
    head = title(alert)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(head, SLACK_HEADER_MAX)}},
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": _clip(f"*{label}*\n{slack_escaped(value)}", SLACK_FIELD_MAX),
                }
                for label, value in facts(alert)[:10]
            ],
        },
    ]
    link = order_link(alert, link_template)
    if link is not None:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "open_order",
                        "text": {"type": "plain_text", "text": "Open order in Grafana"},
                        "url": link,
                    }
                ],
            }
        )
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"alert `{alert.alert_id}`"}]}
    )
    text = f"{icon} {head}, deadline {format_utc(alert.deadline)}"
    if alert.customer is not None:
        text += f", customer {slack_escaped(customer_name(alert))} ({alert.customer.tier})"
    return {"text": _clip(text, SLACK_TEXT_MAX), "blocks": blocks}


# --- Microsoft Teams -------------------------------------------------------------


def teams_message(alert: Alert, link_template: str = DEFAULT_LINK_TEMPLATE) -> dict[str, Any]:
    """A Teams workflow-webhook message carrying one Adaptive Card (version 1.4)."""
    color = {AlertStatus.OPEN: "Attention", AlertStatus.RESOLVED: "Good"}.get(
        alert.status, "Default"
    )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": title(alert),
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
            {
                "type": "FactSet",
                "facts": [
                    {
                        "title": label,
                        "value": teams_escaped(value) if label == "Customer" else value,
                    }
                    for label, value in facts(alert)
                ],
            },
            {
                "type": "TextBlock",
                "text": f"alert {alert.alert_id}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
    }
    link = order_link(alert, link_template)
    if link is not None:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open order in Grafana", "url": link}
        ]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


# --- PagerDuty -------------------------------------------------------------------


def pagerduty_event(
    alert: Alert, routing_key: str, link_template: str = DEFAULT_LINK_TEMPLATE
) -> dict[str, Any]:
    """An Events API v2 event: `trigger` while open, `resolve` once resolved or retracted."""
    if alert.status is not AlertStatus.OPEN:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert.alert_id}
    details: dict[str, Any] = {label.lower(): value for label, value in facts(alert)}
    details["alert_id"] = alert.alert_id
    if alert.lateness_s is not None:
        details["lateness_s"] = alert.lateness_s
    payload: dict[str, Any] = {
        "summary": _clip(title(alert), PAGERDUTY_SUMMARY_MAX),
        "source": alert.unit_id or alert.stage or "chainwatch",
        "severity": PAGERDUTY_SEVERITY.get(alert.severity, "info"),
        "timestamp": format_utc(alert.detected_at),
        "class": alert.type.value,
        "custom_details": details,
    }
    if alert.stage:
        payload["component"] = alert.stage
    if alert.customer is not None:
        payload["group"] = alert.customer.customer_id
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.alert_id,
        "payload": payload,
        "client": "Chainwatch",
    }
    link = order_link(alert, link_template)
    if link is not None:
        event["links"] = [{"href": link, "text": f"Order {alert.order_id} in Grafana"}]
        event["client_url"] = link
    return event


def redacted(event: dict[str, Any]) -> dict[str, Any]:
    """The event as logged and dead-lettered: the routing key is a secret."""
    return {**event, "routing_key": REDACTED} if "routing_key" in event else event
