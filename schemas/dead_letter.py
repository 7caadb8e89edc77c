"""The dead-letter envelope, topic `dead-letter` (CONTRACT.md, outputs).

Every rejected input record is written here with its original bytes, where
it came from, why it was rejected and when: nothing is silently dropped. The
envelope is deterministic in everything but `failed_at` - `dead_letter_id`
hashes the source position - so a re-processed record (a restart, a replay of
the same file) yields the same id and consumers can de-duplicate.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import UtcDatetime

MAX_REASON = 300
MAX_ERRORS = 32


class ReasonCode(StrEnum):
    """Short, stable, low-cardinality codes (a ClickHouse `LowCardinality` column)."""

    NOT_JSON = "not_json"
    """The value is not UTF-8 JSON."""
    NOT_OBJECT = "not_object"
    """JSON, but not an object (or null outside `crm.customers`)."""
    VALIDATION_FAILED = "validation_failed"
    """An object that breaks the contract: see `errors`."""
    OFF_ROUTE = "off_route"
    """A scan for a stage not on the order's latest route (needs state)."""
    BAD_UPDATE = "bad_update"
    """An `updated` order that cannot apply to the stored order (needs state)."""
    UNMAPPABLE_EPCIS = "unmappable_epcis"
    """An EPCIS event no mapping rule turns into a scan."""
    BAD_REPLAY_LINE = "bad_replay_line"
    """A scenario line that is JSON but not a `{topic, key?, value}` object."""
    KEY_MISMATCH = "key_mismatch"
    """The Kafka key is present and differs from the record's id field (CONTRACT v1.2)."""
    PROCESSING_ERROR = "processing_error"
    """Handling the record failed (a bug, an output too large); `errors` has the text."""
    ORDER_CLOSED = "order_closed"
    """A record for an order closed longer ago than the engine's retention (CONTRACT v1.2)."""
    STATE_LIMIT = "state_limit"
    """The order already holds the most records the engine keeps per order (bounded state)."""


class ErrorDetail(BaseModel):
    """One reason a record was rejected; `loc` is a dotted path (`attributes.shade`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    loc: str
    msg: str
    type: str


class DeadLetterSource(BaseModel):
    """Where the rejected record came from: a Kafka position, an HTTP request or a replay line."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["kafka", "http", "replay"]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    request_id: str | None = None
    file: str | None = Field(default=None, description="Scenario file of a replay line.")
    line: int | None = Field(default=None, description="1-based line in a scenario file.")
    index: int | None = Field(
        default=None, description="0-based position in a multi-event HTTP body (EPCIS)."
    )

    def key(self) -> str:
        """The canonical position string hashed into `dead_letter_id`."""
        parts = (
            self.kind,
            self.topic,
            self.partition,
            self.offset,
            self.request_id,
            self.file,
            self.line,
            self.index,
        )
        return "|".join("" if part is None else str(part) for part in parts)


class DeadLetter(BaseModel):
    """A rejected input record and why (an output of the system)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dead_letter_id: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="Hex SHA-256 of source.key(): stable across re-processing."
    )
    source: DeadLetterSource
    key_b64: str | None = Field(default=None, description="The record key, base64.")
    value_b64: str | None = Field(
        description="The original value bytes, base64; null for a null (tombstone) value."
    )
    errors: list[ErrorDetail]
    reason: Annotated[str, Field(max_length=MAX_REASON)]
    reason_code: ReasonCode
    failed_at: UtcDatetime

    @classmethod
    def build(
        cls,
        raw: bytes | None,
        source: DeadLetterSource,
        errors: Sequence[ErrorDetail],
        reason_code: ReasonCode | str,
        now: datetime,
        *,
        key: bytes | None = None,
    ) -> DeadLetter:
        """The envelope for `raw`; `now` is passed in so callers (and tests) own the clock."""
        code = ReasonCode(reason_code)
        kept = list(errors[:MAX_ERRORS])
        return cls(
            dead_letter_id=hashlib.sha256(source.key().encode()).hexdigest(),
            source=source,
            key_b64=_b64(key),
            value_b64=_b64(raw),
            errors=kept,
            reason=summarise(code, errors),
            reason_code=code,
            failed_at=now,
        )

    def raw_value(self) -> bytes | None:
        """The original value bytes (for re-publishing after a fix)."""
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)


def summarise(code: ReasonCode, errors: Sequence[ErrorDetail]) -> str:
    """One line for humans and dashboards: `validation_failed: event_time: no offset`."""
    text = code.value
    if errors:
        first = errors[0]
        text += f": {first.loc}: {first.msg}" if first.loc else f": {first.msg}"
        if len(errors) > 1:
            text += f" (+{len(errors) - 1} more)"
    text = " ".join(text.split())
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 3] + "..."
    return text


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
