"""What `chainwatch notify` writes back to Kafka: the delivery log and its dead letters.

The notifier never opens ClickHouse itself (the embedded store belongs to one
process, the sink); it publishes one `DeliveryLog` per finished delivery to the
`webhook-deliveries` topic, which the sink stores in `webhook_deliveries`, and a
`WebhookDeadLetter` per delivery it gave up on to `webhook-dead-letter`, with
everything needed to re-send it by hand. Neither ever contains a secret.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from schemas.common import UtcDatetime

DELIVERIES_TOPIC = "webhook-deliveries"
DEAD_LETTER_TOPIC = "webhook-dead-letter"
NOTIFY_TOPICS = (DELIVERIES_TOPIC, DEAD_LETTER_TOPIC)

Outcome = Literal["delivered", "gave_up"]


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
    status_codes: list[int]
    """HTTP status of every attempt, 0 where there was no response (timeout, refused)."""
    last_error: str = ""
    first_attempt_at: UtcDatetime
    finished_at: UtcDatetime
    latency_ms: float
    """From the first attempt to the end of the last one."""


class WebhookDeadLetter(BaseModel):
    """A delivery given up on: the exact body that was signed, and why it failed."""

    model_config = ConfigDict(frozen=True)

    dead_letter_id: str
    webhook_id: str
    endpoint: str
    url_host: str
    alert_id: str
    reason: str
    attempts: int
    status_codes: list[int]
    payload: dict[str, Any]
    failed_at: UtcDatetime

    @staticmethod
    def id_for(webhook_id: str, endpoint: str) -> str:
        """Stable per (message, endpoint), so re-processing yields the same id."""
        return hashlib.sha256(f"{webhook_id}|{endpoint}".encode()).hexdigest()
