"""What `chainwatch deliveries resend` re-sends (`sinks.webhooks.resend`), without the network.

The end-to-end run is tests/sinks/test_webhook_resend.py; here the rules it cannot
reach cheaply: a PagerDuty event gets its routing key back (the dead letter keeps it
redacted), a newer message delivered while an older one was still retried
(`concurrency > 1`) blocks the older one, a payload too large to keep is reported.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sink_samples import make_alert

from sinks.webhooks.payloads import render
from sinks.webhooks.records import DeliveryLog, WebhookDeadLetter
from sinks.webhooks.resend import resend_body, select
from sinks.webhooks.subscriptions import Endpoint

T0 = datetime(2027, 3, 1, 12, tzinfo=UTC)
KEY = "R0UT1NGKEY0123456789abcdef012345"


def _letter(webhook_id: str, failed_at: datetime, payload: dict[str, Any]) -> WebhookDeadLetter:
    return WebhookDeadLetter(
        dead_letter_id=WebhookDeadLetter.id_for(webhook_id, "ops"),
        webhook_id=webhook_id,
        endpoint="ops",
        url_host="hooks.example.com",
        alert_id="A-1",
        reason="HTTP 410",
        attempts=1,
        status_codes=[410],
        payload=payload,
        failed_at=failed_at,
    )


def _log(webhook_id: str, outcome: str, first: datetime, finished: datetime) -> DeliveryLog:
    return DeliveryLog(
        webhook_id=webhook_id,
        alert_id="A-1",
        alert_status="open",
        alert_type="stage_overdue",
        endpoint="ops",
        url_host="hooks.example.com",
        outcome=outcome,  # type: ignore[arg-type]
        attempts=1,
        status_codes=[200],
        first_attempt_at=first,
        finished_at=finished,
        latency_ms=1.0,
    )


def _endpoint(**fields: Any) -> Endpoint:
    return Endpoint.model_validate(
        {"name": "ops", "url": "https://hooks.example.com/x", "secret": "whsec_" + "A" * 24}
        | fields
    )


def test_a_pagerduty_event_is_re_sent_with_its_routing_key_put_back() -> None:
    kept, sent = render(make_alert(1), "pagerduty", routing_key=KEY)
    assert kept["routing_key"] == "<redacted>"
    letter = _letter("msg_1", T0, kept)
    pagerduty = _endpoint(format="pagerduty", routing_key=KEY)
    assert resend_body(letter, pagerduty) == sent  # the exact body that was signed

    [chosen] = select([letter], [], since=T0, endpoints=(), configured={"ops": _endpoint()})
    assert chosen.why_not == "a PagerDuty event, and the endpoint is no longer format pagerduty"


def test_an_older_message_retried_while_a_newer_one_was_delivered_is_not_re_sent() -> None:
    """With `concurrency > 1` the newer `resolved` went through (finishing before the older
    `open` was given up): re-sending the `open` would re-open the incident."""
    letter = _letter("msg_open", T0 + timedelta(minutes=60), {"type": "alert.open"})
    logs = [
        _log("msg_open", "gave_up", T0, T0 + timedelta(minutes=60)),
        _log("msg_resolved", "delivered", T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)),
    ]
    [chosen] = select([letter], logs, since=T0, endpoints=(), configured={"ops": _endpoint()})
    assert chosen.why_not is not None
    assert chosen.why_not.startswith("a later message of this alert was delivered at ")
    # an earlier message's delivery blocks nothing
    earlier = [logs[0], _log("msg_before", "delivered", T0 - timedelta(minutes=5), T0)]
    [chosen] = select([letter], earlier, since=T0, endpoints=(), configured={"ops": _endpoint()})
    assert chosen.resend


def test_a_later_delivery_blocks_a_re_send_also_without_the_original_log() -> None:
    """The notifier's own log of the given-up delivery may be past the read (retention):
    a delivery of the alert finished after `failed_at` still blocks it."""
    letter = _letter("msg_open", T0, {"type": "alert.open"})
    later = _log("msg_resolved", "delivered", T0 - timedelta(minutes=1), T0 + timedelta(seconds=1))
    [chosen] = select([letter], [later], since=T0, endpoints=(), configured={"ops": _endpoint()})
    assert chosen.why_not is not None
    assert chosen.why_not.startswith("a later message of this alert was delivered at ")


def test_a_payload_too_large_to_keep_is_reported_not_re_sent() -> None:
    letter = _letter("msg_big", T0, {"data": "x" * 2_000_000})
    assert letter.payload_truncated
    [chosen] = select([letter], [], since=T0, endpoints=(), configured={"ops": _endpoint()})
    assert chosen.why_not is not None
    assert chosen.why_not.startswith("its payload was too large to keep (")


def test_a_later_message_silenced_blocks_a_re_send_of_an_older_one() -> None:
    """An `open` given up, then its `resolved` silenced (a maintenance window): re-sending
    the `open` would page an incident the receiver never sees closed."""
    letter = _letter("msg_open", T0, {"type": "alert.open"})
    logs = [
        _log("msg_open", "gave_up", T0 - timedelta(minutes=1), T0),
        _log("msg_resolved", "silenced", T0 + timedelta(minutes=5), T0 + timedelta(minutes=5)),
    ]
    [chosen] = select([letter], logs, since=T0, endpoints=(), configured={"ops": _endpoint()})
    assert chosen.why_not is not None
    assert chosen.why_not.startswith("a later message of this alert was silenced at ")
