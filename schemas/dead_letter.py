"""The dead-letter envelope, topic `dead-letter` (CONTRACT.md, outputs).

Every rejected input record is written here with its original bytes, where
it came from, why it was rejected and when: nothing is silently dropped. The
envelope is deterministic in everything but `failed_at` - `dead_letter_id`
hashes the source position - so a re-processed record (a restart, a replay of
the same file) yields the same id and consumers can de-duplicate.

A dead letter never exceeds the topic's maximum message size (CONTRACT.md
v1.2): `DeadLetter.build` measures the envelope it would write and, when it is
larger than `max_bytes`, keeps only a prefix of the original bytes (and of an
oversized key) with `truncated: true` plus the original's size and SHA-256,
so an operator can still tell which record it was. Without this a broker
refuses the envelope forever and the record is lost, or its producer (the
gateway) answers 503 for good.
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

KAFKA_MAX_MESSAGE_BYTES = 1_048_576
"""Kafka's default maximum message size (`message.max.bytes`, `max.request.size`)."""
MAX_DEAD_LETTER_BYTES = KAFKA_MAX_MESSAGE_BYTES - 64 * 1024
"""Default bound of one envelope's JSON. The 64 KiB headroom covers the record
key (a 64-character id), record and batch framing, and faust's stricter
producer default (`producer_max_request_size` = 1,000,000)."""
MAX_TRUNCATED_TEXT = 500
"""A cut envelope also bounds each error's `loc` and `msg` (a `loc` may name an
oversized JSON key) to this many characters."""
MAX_TRUNCATED_KEY_BYTES = 1024
"""A cut envelope keeps at most this many bytes of the record key."""


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
    """The Kafka key is present and differs from the record's id field (`order_id`
    for `orders` and `scans`, `unit_id` for `unit-status`, `customer_id` for
    `crm.customers`): processing it would build a second, partial state on
    another partition (CONTRACT.md v1.2)."""
    PROCESSING_ERROR = "processing_error"
    """Processing a valid-looking record failed for any other reason (a bug, an
    output too large for Kafka); `errors` carries the error text and the worker
    goes on (CONTRACT.md v1.2: nothing is silently dropped, also on failure)."""
    ORDER_CLOSED = "order_closed"
    """A record for an order that was closed (completed or cancelled) and removed
    from the engine's state after the retention (CONTRACT.md v1.2, bounded state)."""
    STATE_LIMIT = "state_limit"
    """The order or unit already holds the most records the engine keeps per key, or a
    unit status record is older than what the unit folded away (bounded state)."""


class ErrorDetail(BaseModel):
    """One reason a record was rejected; `loc` is a dotted path (`attributes.shade`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    loc: str
    msg: str
    type: str


class DeadLetterSource(BaseModel):
    """Where the rejected record came from: a Kafka position, an HTTP request, a replay
    line or a row of an imported file (`chainwatch import`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["kafka", "http", "replay", "import"]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    request_id: str | None = None
    file: str | None = Field(
        default=None, description="Scenario file of a replay line, or the imported file."
    )
    line: int | None = Field(
        default=None,
        description="1-based line in a scenario file, or the row of an imported file.",
    )
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
        description="Hex SHA-256 of source.key() (and, for an HTTP item, of its bytes): "
        "stable across re-processing."
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
    truncated: bool = Field(
        default=False,
        description="True when the envelope would exceed the maximum message size and "
        "`value_b64` (and possibly `key_b64`) hold only a prefix of the original bytes.",
    )
    original_size: int | None = Field(
        default=None, ge=0, description="Size in bytes of the original value, when truncated."
    )
    original_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="Hex SHA-256 of the original value, when truncated."
    )
    original_key_size: int | None = Field(
        default=None, ge=0, description="Size in bytes of the original key, when it was cut."
    )
    original_key_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="Hex SHA-256 of the original key, when it was cut."
    )

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
        max_bytes: int = MAX_DEAD_LETTER_BYTES,
        original: tuple[int, str] | None = None,
    ) -> DeadLetter:
        """The envelope for `raw`, at most `max_bytes` as JSON (`encode()`).

        `now` is passed in so callers (and tests) own the clock. An envelope that
        would be larger keeps a prefix of `raw` as long as fits, with
        `truncated`, `original_size` and `original_sha256`; a key longer than
        `MAX_TRUNCATED_KEY_BYTES` is cut the same way, and each error's text is
        bounded. `ValueError` if even an envelope without value cannot fit
        (a `max_bytes` of a few hundred bytes: a configuration bug).

        `original` (size, hex SHA-256) says `raw` is already only a prefix of a
        value too large to have been held whole (an import line of gigabytes):
        the envelope is then marked truncated with the whole value's figures.
        """
        code = ReasonCode(reason_code)
        letter = cls(
            dead_letter_id=dead_letter_id(source, raw),
            source=source,
            key_b64=_b64(key),
            value_b64=_b64(raw),
            errors=list(errors[:MAX_ERRORS]),
            reason=summarise(code, errors),
            reason_code=code,
            failed_at=now,
        )
        if original is None and (
            _upper_bound(letter) <= max_bytes or len(letter.encode()) <= max_bytes
        ):
            return letter
        return _truncated(letter, raw, key, max_bytes, original)

    def encode(self) -> bytes:
        """The wire form written to `dead-letter` (compact JSON, UTF-8)."""
        return self.model_dump_json().encode()

    def raw_value(self) -> bytes | None:
        """The original value bytes (for re-publishing after a fix)."""
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)


def dead_letter_id(source: DeadLetterSource, raw: bytes | None) -> str:
    """Hex SHA-256 of the source position; for an HTTP item also of its bytes.

    A position in a log or a file names one record. An HTTP request id is the
    caller's `X-Request-ID`: a client that reused one for another body gave two
    records the same id, and a consumer keeping one per id (the sink's table)
    lost the other. The same body sent again with the same id keeps its id.
    """
    position = source.key()
    if source.kind == "http":
        position += "|" + hashlib.sha256(raw or b"").hexdigest()
    return hashlib.sha256(position.encode()).hexdigest()


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


_ENVELOPE_SLACK = 4096
"""Generous bound of everything but the key, the value and the errors' text:
ids, source, reason, timestamps and the JSON punctuation."""


def _upper_bound(letter: DeadLetter) -> int:
    """A cheap upper bound of `len(letter.encode())` (text may be 6x when escaped)."""
    text = sum(len(e.loc) + len(e.msg) + len(e.type) + 32 for e in letter.errors)
    text += len(letter.reason) + len(letter.source.key())
    return len(letter.key_b64 or "") + len(letter.value_b64 or "") + 6 * text + _ENVELOPE_SLACK


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TRUNCATED_TEXT else text[: MAX_TRUNCATED_TEXT - 3] + "..."


def _truncated(
    letter: DeadLetter,
    raw: bytes | None,
    key: bytes | None,
    max_bytes: int,
    original: tuple[int, str] | None = None,
) -> DeadLetter:
    """`letter` cut to `max_bytes`: bounded errors and key, then the longest value prefix.

    The value's room is measured on the envelope with an empty value (the
    truncation fields already at their final width), and base64 grows by
    exactly 4/3 with no JSON escaping, so the result is exact, not estimated.
    """
    update: dict[str, object] = {
        "truncated": True,
        "errors": [
            ErrorDetail(loc=_clip(e.loc), msg=_clip(e.msg), type=_clip(e.type))
            for e in letter.errors
        ],
        "value_b64": None if raw is None else "",
    }
    if original is not None:
        update["original_size"], update["original_sha256"] = original
    elif raw is not None:
        update["original_size"] = len(raw)
        update["original_sha256"] = hashlib.sha256(raw).hexdigest()
    if key is not None and len(key) > MAX_TRUNCATED_KEY_BYTES:
        update["key_b64"] = _b64(key[:MAX_TRUNCATED_KEY_BYTES])
        update["original_key_size"] = len(key)
        update["original_key_sha256"] = hashlib.sha256(key).hexdigest()
    shell = letter.model_copy(update=update)
    while len(shell.encode()) > max_bytes and shell.errors:
        # Errors beyond the first go first; `reason` still counts them all.
        shell = shell.model_copy(update={"errors": shell.errors[: len(shell.errors) // 2]})
    room = max_bytes - len(shell.encode())
    if room < 0:
        raise ValueError(f"a dead letter cannot fit in {max_bytes} bytes")
    if raw is None:
        return shell
    kept = raw[: (room // 4) * 3]
    return shell.model_copy(update={"value_b64": _b64(kept)})
