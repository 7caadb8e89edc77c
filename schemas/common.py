"""Field types shared by every record of the contract (CONTRACT.md, v1).

Timestamps must carry an offset: a naive timestamp is ambiguous across the
factory sites (they write `+05:30`, `+01:00`, `Z`), so it is invalid input
rather than silently assumed UTC. Everything is normalised to UTC and
truncated to milliseconds, the precision ClickHouse stores
(`DateTime64(3, 'UTC')`) and the rules compare at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, StringConstraints

IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN, min_length=1, max_length=64)]
"""order_id, customer_id, unit_id, event_id: 1-64 chars of `[A-Za-z0-9._:-]`."""

StageName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""Stages are configuration (the SLA plan), so the contract only fixes their spelling."""


def truncate_ms(value: datetime) -> datetime:
    """UTC, truncated (not rounded) to whole milliseconds."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def format_utc(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.fffZ`, the canonical wire and `alert_id` form."""
    value = truncate_ms(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _require_rfc3339_with_offset(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp has no UTC offset")
        return value
    if not isinstance(value, str):
        raise ValueError("timestamp must be an RFC 3339 string")
    text = value.strip()
    if len(text) < 19 or text[10] not in "Tt ":
        raise ValueError("timestamp must be RFC 3339, e.g. 2026-11-25T10:15:00+05:30")
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"timestamp is not RFC 3339: {exc}") from None
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no UTC offset (write ...Z or ...+05:30)")
    return parsed


UtcDatetime = Annotated[
    datetime,
    BeforeValidator(_require_rfc3339_with_offset),
    AfterValidator(truncate_ms),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}),
]
"""An RFC 3339 timestamp with an offset, held as an aware UTC datetime (ms precision)."""
