"""What a receiver gets: one `webhook-id` per distinct message, a deterministic body.

A message is one record of the `alerts` topic. Its `webhook-id` is a hash of the
alert's id, its full content and where the message first appeared on the topic
(partition and offset), so:
- a retry, or a re-read of the same record after a restart, keeps its id;
- a change of anything (status, severity, customer, ...) is a new id, and so is
  an alert that is re-opened with exactly the content it had before (open →
  retracted → open): a receiver that de-duplicates on `webhook-id` keeps it;
- the engine re-publishing an unchanged alert (a record redelivered after a
  crash) keeps the id of the record it repeats, as long as that record is among
  the last `MessageIds.capacity` alerts this process has seen.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from schemas.alerts import Alert
from schemas.common import format_utc
from sinks.webhooks.formats import (
    DEFAULT_LINK_TEMPLATE,
    pagerduty_event,
    redacted,
    slack_message,
    teams_message,
)
from sinks.webhooks.records import body_of


def content_hash(alert: Alert) -> str:
    return hashlib.sha256(body_of(alert.model_dump(mode="json")).encode()).hexdigest()


def message_id(alert_id: str, content: str, partition: int, offset: int) -> str:
    digest = hashlib.sha256(f"{alert_id}|{content}|{partition}|{offset}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


class MessageIds:
    """The `webhook-id` of each alert record, read in partition order.

    Remembers, per alert id, the content and id of its latest message (bounded:
    the least recently seen alerts are forgotten), so an unchanged re-publish
    keeps its id.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def id_for(self, alert: Alert, partition: int, offset: int) -> str:
        content = content_hash(alert)
        last = self._last.get(alert.alert_id)
        if last is not None and last[0] == content:
            self._last.move_to_end(alert.alert_id)
            return last[1]
        msg_id = message_id(alert.alert_id, content, partition, offset)
        self._last[alert.alert_id] = (content, msg_id)
        self._last.move_to_end(alert.alert_id)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
        return msg_id


def generic_payload(alert: Alert) -> dict[str, Any]:
    """The Standard Webhooks envelope: `type`, `timestamp` (of the event), `data`."""
    return {
        "type": f"alert.{alert.status.value}",
        "timestamp": format_utc(alert.detected_at),
        "data": alert.model_dump(mode="json"),
    }


FORMATS = ("standard", "slack", "teams", "pagerduty")


def render(
    alert: Alert,
    fmt: str,
    *,
    link_template: str = DEFAULT_LINK_TEMPLATE,
    routing_key: str = "",
) -> tuple[dict[str, Any], str]:
    """What is kept (delivery log, dead letter) and the exact body sent (and signed).

    The kept payload is the body with its secrets redacted (the PagerDuty routing
    key), so a dead letter can be re-sent by hand once the key is put back.
    """
    if fmt == "slack":
        payload = slack_message(alert, link_template)
    elif fmt == "teams":
        payload = teams_message(alert, link_template)
    elif fmt == "pagerduty":
        event = pagerduty_event(alert, routing_key, link_template)
        return redacted(event), body_of(event)
    else:  # "standard" (and its former name "json")
        payload = generic_payload(alert)
    return payload, body_of(payload)
