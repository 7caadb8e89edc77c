"""The outcome of one delivery as the records the notifier publishes: pure, no I/O.

A delivery ends `delivered` or `gave_up`; either way one `DeliveryLog`, and a
`WebhookDeadLetter` when given up (records.py). A delivery that failed on a
bug — the message could not be built, the attempt loop raised — is given up
the same way with reason `processing_error: <what>: <error>` (the name of the
contract's reason code for a record whose processing failed), so it is
counted, stored and re-sendable like every other one instead of ending the
endpoint's worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from schemas.alerts import Alert
from sinks.webhooks.delivery import DeliveryResult, error_text
from sinks.webhooks.records import DeliveryLog, WebhookDeadLetter
from sinks.webhooks.subscriptions import Endpoint


@dataclass(frozen=True)
class Job:
    """One alert record to deliver to one endpoint."""

    alert: Alert
    msg_id: str
    tp: TopicPartition
    offset: int
    generation: int
    """The assignment of `tp` it was read in (`EndpointPipe`): an outcome arriving after
    the partition was revoked must not touch what a later assignment read."""
    read_at: float = field(default_factory=time.monotonic)
    """When it was read from `alerts`: the silences known must be as new (silence_follower.py).
    A released job's: when it was released."""
    released: bool = False
    """Held by a silence that has ended, delivered now (`EndpointPipe._release_held`): its
    record's offset was settled when it was recorded `silenced`."""


def processing_error(
    what: str,
    exc: BaseException,
    began: float,
    statuses: list[int] | None = None,
    *,
    hide: Iterable[str] = (),
) -> DeliveryResult:
    """A delivery given up because `what` raised `exc`; `statuses` of the attempts made,
    none of `hide` (`delivery.request_secrets`) in the reason.

    `began` is the `time.monotonic()` at which the delivery started.
    """
    codes = list(statuses or ())
    return DeliveryResult(
        delivered=False,
        attempts=len(codes),
        status_codes=codes,
        last_error=f"processing_error: {what}: {error_text(exc, hide=hide)}",
        latency_ms=(time.monotonic() - began) * 1000,
    )


def delivery_log(
    job: Job, endpoint: Endpoint, result: DeliveryResult, *, silenced: bool = False
) -> DeliveryLog:
    alert = job.alert
    return log_of(
        job.msg_id,
        alert.alert_id,
        alert.status.value,
        alert.type.value,
        endpoint,
        result,
        silenced=silenced,
    )


def silenced_result(silence_id: str, reason: str) -> DeliveryResult:
    """A delivery not sent because silence `silence_id` was in force: no attempt."""
    return DeliveryResult(delivered=False, last_error=f"silenced: {silence_id} ({reason})"[:1000])


def log_of(
    webhook_id: str,
    alert_id: str,
    alert_status: str,
    alert_type: str,
    endpoint: Endpoint,
    result: DeliveryResult,
    *,
    silenced: bool = False,
) -> DeliveryLog:
    """The delivery log of one finished delivery (the notifier's, and a re-send's); a
    `silenced` one was not sent (its silence's id in `last_error`)."""
    return DeliveryLog(
        webhook_id=webhook_id,
        alert_id=alert_id,
        alert_status=alert_status,
        alert_type=alert_type,
        endpoint=endpoint.name,
        url_host=endpoint.host,
        outcome="silenced" if silenced else "delivered" if result.delivered else "gave_up",
        attempts=result.attempts,
        status_codes=result.status_codes,
        last_error=result.last_error,
        first_attempt_at=result.first_attempt_at,
        finished_at=result.finished_at,
        latency_ms=result.latency_ms,
    )


def dead_letter(
    job: Job, endpoint: Endpoint, result: DeliveryResult, payload: dict[str, Any]
) -> WebhookDeadLetter:
    """`payload` is what was (or would have been) sent, `{}` if it could not be built."""
    return WebhookDeadLetter(
        dead_letter_id=WebhookDeadLetter.id_for(job.msg_id, endpoint.name),
        webhook_id=job.msg_id,
        endpoint=endpoint.name,
        url_host=endpoint.host,
        alert_id=job.alert.alert_id,
        reason=result.last_error,
        attempts=result.attempts,
        status_codes=result.status_codes,
        payload=payload,
        failed_at=result.finished_at,
    )
