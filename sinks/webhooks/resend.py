"""Re-sending what the notifier gave up (`chainwatch deliveries resend`): which, and how.

`select` decides, from the dead letters (`webhook-dead-letter`) and the delivery log
(`webhook-deliveries`), which given-up deliveries are re-sent; pure, no I/O:
- per (endpoint, alert_id) only the latest given-up message (an older one is
  superseded: re-sending it after the newer one would put an old status last);
- none when a later message of that alert was delivered to that endpoint: its
  delivery finished after the dead letter's `failed_at`, or (`concurrency > 1`,
  an older message retried while a newer one went through) its first attempt came
  after the given-up message's first attempt. Re-sending an old `open` after a
  delivered `resolved` would re-open an incident. Nor when this very message was
  delivered (a restart of the notifier delivered it again, or a resend did). A
  message `silenced` (a silence in force, silences.py) counts as delivered here:
  the silence decided it, and an older message re-sent after it would be last
  (`delivered_since`; `chainwatch deliveries resend` asks it again before each
  re-send, of what the notifier delivered after the read);
- none to an endpoint no longer in the subscriptions file, nor of a dead letter
  without its payload (`payload_truncated`, or `{}`: the message could not be
  built), nor a PagerDuty event (its routing key kept as `<redacted>`) to an
  endpoint that no longer has a routing key.

`resend_one` sends one: the same `webhook-id` (receivers de-duplicate on it), the
exact body (`records.body_of` of the kept payload, the routing key put back) signed
now with the endpoint's current secret, to its current URL, through the notifier's
own `delivery.deliver` (retries, target policy, redaction). `outcome_records` makes
its `DeliveryLog` and, when it failed again, its new `WebhookDeadLetter`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from sinks.webhooks.delivery import (
    AttemptResult,
    DeliveryResult,
    EndpointHealth,
    RetryPolicy,
    deliver,
)
from sinks.webhooks.formats import REDACTED
from sinks.webhooks.outcomes import log_of
from sinks.webhooks.records import DeliveryLog, WebhookDeadLetter, body_of
from sinks.webhooks.subscriptions import Endpoint

UNKNOWN = "unknown"
"""`alert_status` / `alert_type` of a re-sent delivery whose original log was not read."""


@dataclass(frozen=True)
class GivenUp:
    """One dead letter of the window and what `resend` does with it."""

    letter: WebhookDeadLetter
    why_not: str | None
    """None: it is (or would be) re-sent; else why not."""
    original: DeliveryLog | None
    """The notifier's `gave_up` log of the same delivery, when read."""

    @property
    def resend(self) -> bool:
        return self.why_not is None


def _at(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def delivered_since(
    letter: WebhookDeadLetter, original: DeliveryLog | None, logs: Iterable[DeliveryLog]
) -> str | None:
    """Why `letter` is not needed any more: a delivery of its alert to its endpoint
    after it (see the module's docstring), or of the message itself."""
    for log in logs:
        done = log.outcome  # delivered, or silenced (a silence in force decided: not sent)
        if log.webhook_id == letter.webhook_id:
            return f"this message was {done} at {_at(log.finished_at)}"
        later = log.finished_at > letter.failed_at or (
            original is not None and log.first_attempt_at > original.first_attempt_at
        )
        if later:
            return (
                f"a later message of this alert was {done} at {_at(log.finished_at)} "
                f"(webhook-id {log.webhook_id})"
            )
    return None


def _unsendable(letter: WebhookDeadLetter, endpoint: Endpoint | None) -> str | None:
    if endpoint is None:
        return "the endpoint is no longer in the subscriptions file"
    if letter.payload_truncated:
        return (
            f"its payload was too large to keep ({letter.payload_bytes} bytes, "
            f"sha256 {letter.payload_sha256}); find alert {letter.alert_id} on `alerts`"
        )
    if not letter.payload:
        return "it has no payload (the message could not be built)"
    if letter.payload.get("routing_key") == REDACTED and endpoint.format != "pagerduty":
        return "a PagerDuty event, and the endpoint is no longer format pagerduty"
    return None


def select(
    letters: Iterable[WebhookDeadLetter],
    logs: Iterable[DeliveryLog],
    *,
    since: datetime,
    endpoints: Collection[str],
    configured: Mapping[str, Endpoint],
) -> list[GivenUp]:
    """Every dead letter that failed at or after `since` (of `endpoints`, all when
    empty), oldest first, each with whether it is re-sent (the module's rules).

    `logs` must hold the delivery log from well before `since` (the first attempts of
    the messages given up in the window: `retry_horizon_s` before it)."""
    window = [
        d for d in letters if d.failed_at >= since and (not endpoints or d.endpoint in endpoints)
    ]
    all_logs = list(logs)
    gave_up = {
        (log.webhook_id, log.endpoint, log.finished_at): log
        for log in all_logs
        if log.outcome == "gave_up"
    }  # the notifier's log of the delivery a dead letter is of: both are published from
    # one outcome, with the same id, endpoint and time (a look-up per letter, not a scan)
    originals = {id(d): gave_up.get((d.webhook_id, d.endpoint, d.failed_at)) for d in window}

    def order(letter: WebhookDeadLetter) -> tuple[datetime, datetime, str, str, str]:
        """By failure time; a tie (the same millisecond) by first attempt, then by name:
        the same order whatever the partitions' order of reading."""
        original = originals[id(letter)]
        began = original.first_attempt_at if original is not None else letter.failed_at
        return (letter.failed_at, began, letter.endpoint, letter.alert_id, letter.webhook_id)

    window.sort(key=order)
    latest: dict[tuple[str, str], WebhookDeadLetter] = {}
    for letter in window:
        latest[(letter.endpoint, letter.alert_id)] = letter  # sorted: the last one wins
    delivered: dict[tuple[str, str], list[DeliveryLog]] = {}
    for log in all_logs:
        # a later message silenced ends the incident's story as one delivered does: the
        # older one re-sent after it would re-open what its `resolved` closed
        if log.outcome in ("delivered", "silenced"):
            delivered.setdefault((log.endpoint, log.alert_id), []).append(log)
    chosen: list[GivenUp] = []
    for letter in window:
        key = (letter.endpoint, letter.alert_id)
        original = originals[id(letter)]
        newest = latest[key]
        why_not: str | None
        if newest is not letter:
            again = " (the same message)" if newest.webhook_id == letter.webhook_id else ""
            why_not = f"given up again later, at {_at(newest.failed_at)}{again}"
        else:
            why_not = delivered_since(letter, original, delivered.get(key, ())) or _unsendable(
                letter, configured.get(letter.endpoint)
            )
        chosen.append(GivenUp(letter, why_not, original))
    return chosen


def resend_body(letter: WebhookDeadLetter, endpoint: Endpoint) -> str:
    """The exact body the notifier signed and sent: the kept payload with the
    PagerDuty routing key (kept as `<redacted>`) put back."""
    payload: dict[str, Any] = letter.payload
    if payload.get("routing_key") == REDACTED:
        payload = {**payload, "routing_key": endpoint.pagerduty_routing_key()}
    return body_of(payload)


async def resend_one(
    http: httpx.AsyncClient,
    given_up: GivenUp,
    endpoint: Endpoint,
    policy: RetryPolicy,
    *,
    health: EndpointHealth,
    sleep: Callable[[float], Awaitable[None]],
    on_attempt: Callable[[AttemptResult], None] | None = None,
) -> DeliveryResult:
    """One re-send with the notifier's delivery code; `sleep` waits before a retry (and
    may raise to abandon it: a stop)."""
    signer = Webhook(endpoint.signing_secret()) if endpoint.signed else None
    return await deliver(
        http,
        endpoint.url.get_secret_value(),
        signer,
        given_up.letter.webhook_id,
        resend_body(given_up.letter, endpoint),
        policy,
        sleep=sleep,
        on_attempt=on_attempt,
        health=health,
        hide=(endpoint.pagerduty_routing_key(),),
    )


def _alert_kind(given_up: GivenUp) -> tuple[str, str]:
    """The alert's status and type, from the original log, else a standard payload."""
    if given_up.original is not None:
        return given_up.original.alert_status, given_up.original.alert_type
    data = given_up.letter.payload.get("data")
    if isinstance(data, dict):
        return str(data.get("status", UNKNOWN)), str(data.get("type", UNKNOWN))
    return UNKNOWN, UNKNOWN


def outcome_records(
    given_up: GivenUp, endpoint: Endpoint, result: DeliveryResult
) -> tuple[DeliveryLog, WebhookDeadLetter | None]:
    """The re-send's `DeliveryLog` and, if it failed again, its new dead letter (same
    payload as kept, `failed_at` now, so the next `resend` takes it as the latest)."""
    letter = given_up.letter
    status, kind = _alert_kind(given_up)
    entry = log_of(letter.webhook_id, letter.alert_id, status, kind, endpoint, result)
    if result.delivered:
        return entry, None
    again = letter.model_copy(
        update={
            "url_host": endpoint.host,
            "reason": f"resend: {result.last_error}",
            "attempts": result.attempts,
            "status_codes": result.status_codes,
            "failed_at": result.finished_at,
        }
    )
    return entry, WebhookDeadLetter.model_validate(again.model_dump())
