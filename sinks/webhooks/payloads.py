"""What a receiver gets: one `webhook-id` per distinct message, a deterministic body.

A message is one record of the `alerts` topic. Its `webhook-id` is a hash of the
alert's id, its full content and where the message first appeared on the topic
(partition and offset), so:
- a retry, or a re-read of the same record after a restart, keeps its id;
- a change of anything (status, severity, customer, ...) is a new id, and so is
  an alert that is re-opened with exactly the content it had before (open →
  retracted → open): a receiver that de-duplicates on `webhook-id` keeps it;
- the engine re-publishing an unchanged alert (it re-announces every alert it
  owns after a restart) is a *repeat*: the same content as the latest record of
  that alert, at a later offset of the same partition. The notifier does not
  deliver a repeat again (Slack and Teams do not de-duplicate, so each worker
  restart re-posted every alert into the channel): the endpoint already has
  that content, delivered or pending at an earlier offset (which the endpoint's
  committed position never passes before its outcome). A message this process
  gave up is forgotten (`given_up`): its repeat is delivered, as a new message.

The memory is bounded (the last `MessageIds.capacity` alerts seen): a forgotten
alert's repeat is delivered again, under a new id. It follows every valid alert
record of the partitions an endpoint owns, its filters aside, so A → B → A is a
new message even when the endpoint's filters left B out. After a restart or a
rebalance it is rebuilt from the records before the committed position
(warmup.py); a partition that could not be read back is forgotten, never
guessed: its repeats are delivered again rather than a change skipped.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

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


class Seen(NamedTuple):
    """What one alert record is to an endpoint's `MessageIds`."""

    msg_id: str
    repeat: bool
    """The latest earlier record of this alert, in this partition, had exactly this content."""


@dataclass
class _Latest:
    content: str
    msg_id: str
    partition: int
    offset: int
    """Of the latest record seen with this content (a repeat moves it on)."""


class MessageIds:
    """The `webhook-id` of each alert record, read in partition order, and its repeats.

    Remembers, per alert id, the content, id and position of its latest message
    (bounded: the least recently seen alerts are forgotten), so an unchanged
    re-publish is recognised as a repeat and keeps its id. Records must be
    shown in offset order within a partition; after a partition is read from
    an earlier position again (a rebalance), `forget` it first, or what the
    memory holds would be from ahead of the records being read.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str, _Latest] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def id_for(self, alert: Alert, partition: int, offset: int) -> Seen:
        content = content_hash(alert)
        last = self._last.get(alert.alert_id)
        if last is not None and last.content == content:
            self._last.move_to_end(alert.alert_id)
            if last.partition == partition and last.offset < offset:
                last.offset = offset
                return Seen(last.msg_id, repeat=True)
            return Seen(last.msg_id, repeat=False)  # the same record read again
        msg_id = message_id(alert.alert_id, content, partition, offset)
        self._last[alert.alert_id] = _Latest(content, msg_id, partition, offset)
        self._last.move_to_end(alert.alert_id)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
        return Seen(msg_id, repeat=False)

    def latest(self, alert_id: str) -> str | None:
        """The id of the latest message of `alert_id` read, None if none is remembered."""
        last = self._last.get(alert_id)
        return None if last is None else last.msg_id

    def given_up(self, alert_id: str, msg_id: str) -> None:
        """The endpoint gave `msg_id` up (dead-lettered): a later repeat of it is no
        repeat to the receiver, who never got it, so it is delivered (as a new message)
        - the engine re-announcing after a restart then heals an endpoint that was down
        past the retry horizon, as it did before repeats were skipped. Only for a
        message read in its partition's current assignment (the endpoint checks): one
        read before a rebalance would forget what the partition's re-read remembers."""
        last = self._last.get(alert_id)
        if last is not None and last.msg_id == msg_id:
            del self._last[alert_id]

    def forget(self, partition: int) -> None:
        """Drop what came from `partition`: it is about to be read again from its
        committed position (or by another process), so it may be ahead of it."""
        for alert_id in [k for k, v in self._last.items() if v.partition == partition]:
            del self._last[alert_id]


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
    key), so a dead letter can be re-sent once the key is put back (resend.py).
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
