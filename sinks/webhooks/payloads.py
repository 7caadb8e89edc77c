"""What a receiver gets: a stable message id and a deterministic body per alert change.

The same alert status change always yields the same `webhook-id` and the same
body bytes, whether it is retried, re-consumed after a restart or re-published
by the engine, so receivers de-duplicate on `webhook-id` alone.
"""

from __future__ import annotations

import hashlib
from typing import Any

from schemas.alerts import Alert
from schemas.common import format_utc
from sinks.webhooks.records import body_of


def webhook_id(alert: Alert) -> str:
    """`msg_` + hash of (alert_id, status): one id per alert status change."""
    digest = hashlib.sha256(f"{alert.alert_id}|{alert.status.value}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def generic_payload(alert: Alert) -> dict[str, Any]:
    """The Standard Webhooks envelope: `type`, `timestamp` (of the event), `data`."""
    return {
        "type": f"alert.{alert.status.value}",
        "timestamp": format_utc(alert.detected_at),
        "data": alert.model_dump(mode="json"),
    }


def slack_text(alert: Alert) -> str:
    subject = f"order {alert.order_id}" if alert.order_id else f"unit {alert.unit_id}"
    where = f" at {alert.stage}" if alert.stage else ""
    if alert.visit and alert.visit > 1:
        where += f" (visit {alert.visit})"
    icon = {"open": ":rotating_light:", "resolved": ":white_check_mark:"}.get(
        alert.status.value, ":information_source:"
    )
    text = (
        f"{icon} *{alert.severity.value}* {alert.type.value} *{alert.status.value}*: "
        f"{subject}{where}, deadline {format_utc(alert.deadline)}"
    )
    if alert.customer is not None:
        name = alert.customer.name or alert.customer.customer_id
        text += f", customer {name} ({alert.customer.tier})"
    if alert.cause is not None:
        text += f", cause: unit {alert.cause.unit_id} {alert.cause.reason or 'down'}"
    return text


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook compatible: `text` plus the alert id for threading bots."""
    return {"text": slack_text(alert), "alert_id": alert.alert_id}


def render(alert: Alert, fmt: str) -> tuple[dict[str, Any], str]:
    """The payload and its exact serialised body (what is signed and sent)."""
    payload = slack_payload(alert) if fmt == "slack" else generic_payload(alert)
    return payload, body_of(payload)
