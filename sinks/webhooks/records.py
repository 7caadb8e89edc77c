"""What `chainwatch notify` writes back to Kafka: the delivery log and its dead letters.

The notifier never opens ClickHouse itself (the embedded store belongs to one
process, the sink); it publishes one `DeliveryLog` per finished delivery to the
`webhook-deliveries` topic, which the sink stores in `webhook_deliveries`, and a
`WebhookDeadLetter` per delivery it gave up on to `webhook-dead-letter`, with
everything needed to re-send it (`chainwatch deliveries resend`, resend.py). Neither
ever contains a secret.

Both stay below `MAX_RECORD_BYTES` (under Kafka's default 1 MiB message limit)
whatever happened: a log keeps the last `MAX_STATUS_CODES` statuses (`attempts`
counts them all) and `MAX_TEXT` characters of an error; a dead letter whose
payload is too large keeps its size and SHA-256 instead (`payload_truncated`),
and `alert_id` finds the alert on the `alerts` topic.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, model_validator

from schemas.common import UtcDatetime
from schemas.dead_letter import MAX_DEAD_LETTER_BYTES

DELIVERIES_TOPIC = "webhook-deliveries"
DEAD_LETTER_TOPIC = "webhook-dead-letter"
NOTIFY_TOPICS = (DELIVERIES_TOPIC, DEAD_LETTER_TOPIC)

Outcome = Literal["delivered", "gave_up", "silenced"]
"""`silenced`: not sent, a silence in force covered it (silences.py; its id in `last_error`)."""

MAX_RECORD_BYTES = MAX_DEAD_LETTER_BYTES
"""Bound of one encoded record, with headroom under Kafka's 1 MiB for key and framing."""
MAX_STATUS_CODES = 100
MAX_TEXT = 1000
MAX_PAYLOAD_BYTES = MAX_RECORD_BYTES - 32 * 1024
"""A dead letter's payload, so that with its other (bounded) fields it fits."""


def _last_codes(codes: list[int]) -> list[int]:
    return codes[-MAX_STATUS_CODES:]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


StatusCodes = Annotated[list[int], AfterValidator(_last_codes)]
"""HTTP status of the last attempts (at most `MAX_STATUS_CODES`), 0 where there was
no response (timeout, refused)."""
Text = Annotated[str, AfterValidator(_cut)]
WebhookId = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,256}$")]
"""A `webhook-id` read back to be sent again as that header (a dead letter re-sent, a
held message released): visible ASCII, no space. Ours are `msg_` and 32 hex digits
(payloads.py); one with a newline or a NUL made every attempt fail before it left
(retried up to the horizon, holding the endpoint's worker), one with a non-ASCII
letter stopped `deliveries resend` with an internal error: such a record is invalid."""


def body_of(payload: dict[str, Any]) -> str:
    """The exact serialisation that is signed and sent: always valid JSON.

    `ValueError` for a non-finite number: `json.dumps` would write `Infinity` or
    `NaN`, which no strict receiver parses. Alerts cannot carry one (the model
    refuses them); this makes it impossible for anything built past the model.
    """
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)


class DeliveryLog(BaseModel):
    """One finished delivery of one alert status change to one endpoint."""

    model_config = ConfigDict(frozen=True)

    webhook_id: str
    alert_id: str
    alert_status: str
    alert_type: str
    endpoint: str
    url_host: str
    outcome: Outcome
    attempts: int
    status_codes: StatusCodes
    last_error: Text = ""
    first_attempt_at: UtcDatetime
    finished_at: UtcDatetime
    latency_ms: float
    """From the first attempt to the end of the last one."""


class WebhookDeadLetter(BaseModel):
    """A delivery given up on: the exact body that was signed, and why it failed."""

    model_config = ConfigDict(frozen=True)

    dead_letter_id: str
    webhook_id: WebhookId
    endpoint: str
    url_host: str
    alert_id: str
    reason: Text
    attempts: int
    status_codes: StatusCodes
    payload: dict[str, Any]
    """The payload that was signed and sent; `{}` when `payload_truncated`."""
    failed_at: UtcDatetime
    payload_truncated: bool = False
    payload_bytes: int | None = None
    """Size of the sent body (`payload` serialised) when it was cut."""
    payload_sha256: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bounded_payload(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
            return data
        body = body_of(data["payload"]).encode()
        if len(body) <= MAX_PAYLOAD_BYTES:
            return data
        return {
            **data,
            "payload": {},
            "payload_truncated": True,
            "payload_bytes": len(body),
            "payload_sha256": hashlib.sha256(body).hexdigest(),
        }

    @staticmethod
    def id_for(webhook_id: str, endpoint: str) -> str:
        """Stable per (message, endpoint), so re-processing yields the same id."""
        return hashlib.sha256(f"{webhook_id}|{endpoint}".encode()).hexdigest()
