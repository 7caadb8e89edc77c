"""What a Slack, Teams or PagerDuty receiver requires of a payload, as a list of what is
wrong (empty when acceptable): the unit tests of the formats (test_webhook_formats.py)
and the integration receiver (test_webhook_delivery.py) apply the same checks.
"""

from __future__ import annotations

from typing import Any


def check_slack(body: dict[str, Any]) -> list[str]:
    wrong = []
    if not isinstance(body.get("text"), str) or not body["text"]:
        wrong.append("text (the fallback) missing")
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return [*wrong, "blocks: 1 to 50 required"]
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                wrong.append("header: plain_text of at most 150 chars")
        elif kind == "section":
            fields = block.get("fields")
            if "text" not in block and not (isinstance(fields, list) and 0 < len(fields) <= 10):
                wrong.append("section: text or 1 to 10 fields")
            for f in fields or []:
                if f.get("type") not in ("mrkdwn", "plain_text") or len(f.get("text", "")) > 2000:
                    wrong.append("section field: mrkdwn/plain_text of at most 2000 chars")
        elif kind == "actions":
            for e in block.get("elements", []):
                if e.get("type") == "button" and not (
                    e.get("text", {}).get("type") == "plain_text"
                    and len(e["text"].get("text", "")) <= 75
                    and 0 < len(e.get("url", "")) <= 3000
                    and 0 < len(e.get("action_id", "")) <= 255
                ):
                    wrong.append("button: plain_text (<= 75), url (<= 3000), action_id")
        elif kind != "context":
            wrong.append(f"unexpected block type {kind!r}")
    return wrong


def check_teams(body: dict[str, Any]) -> list[str]:
    if body.get("type") != "message":
        return ["type must be message"]
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return ["attachments required"]
    wrong = []
    for a in attachments:
        if a.get("contentType") != "application/vnd.microsoft.card.adaptive":
            wrong.append("contentType must be application/vnd.microsoft.card.adaptive")
        card = a.get("content") or {}
        if card.get("type") != "AdaptiveCard" or not card.get("version") or "$schema" not in card:
            wrong.append("content: type AdaptiveCard, version and $schema required")
        for element in card.get("body", []):
            if element.get("type") == "TextBlock" and not element.get("text"):
                wrong.append("TextBlock without text")
            if element.get("type") == "FactSet" and not all(
                f.get("title") and isinstance(f.get("value"), str) for f in element.get("facts", [])
            ):
                wrong.append("FactSet facts need title and value")
        for action in card.get("actions", []):
            if action.get("type") == "Action.OpenUrl" and not action.get("url"):
                wrong.append("Action.OpenUrl without url")
    return wrong


def check_pagerduty(body: dict[str, Any]) -> list[str]:
    wrong = []
    if not body.get("routing_key"):
        wrong.append("routing_key required")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        wrong.append("event_action: trigger | acknowledge | resolve")
    dedup = body.get("dedup_key")
    if action in ("acknowledge", "resolve") and not dedup:
        wrong.append("dedup_key required to acknowledge or resolve")
    if dedup is not None and len(dedup) > 255:
        wrong.append("dedup_key at most 255 chars")
    if action == "trigger":
        payload = body.get("payload") or {}
        if not 0 < len(payload.get("summary", "")) <= 1024:
            wrong.append("payload.summary: 1 to 1024 chars")
        if not payload.get("source"):
            wrong.append("payload.source required")
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            wrong.append("payload.severity: critical | error | warning | info")
    return wrong
