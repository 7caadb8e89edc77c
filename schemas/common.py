"""Field types shared by every record of the contract (CONTRACT.md, v1).

Timestamps must carry an offset: a naive timestamp is ambiguous across the
factory sites (they write `+05:30`, `+01:00`, `Z`), so it is invalid input
rather than silently assumed UTC. Everything is normalised to UTC and
truncated to milliseconds, the precision ClickHouse stores
(`DateTime64(3, 'UTC')`) and the rules compare at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, StringConstraints
from pydantic_core import PydanticCustomError

IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

Identifier = Annotated[
    str, StringConstraints(pattern=IDENTIFIER_PATTERN, min_length=1, max_length=64)
]
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


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?", re.ASCII
)
"""RFC 3339 `date-time` (section 5.6), ASCII digits only; the offset group is
optional here only so that a missing offset gets its own, clearer error message."""

RFC3339_OFFSET_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
"""The same rule for JSON Schema users: in draft 2020-12 `format` is only an
annotation, so the offset requirement is also stated as a pattern."""

MIN_YEAR = 1900
MAX_YEAR = 2299
"""The range of ClickHouse `DateTime64(3)`. Bounding it also keeps the rules'
deadline arithmetic (timestamp + durations) far from `datetime`'s overflow."""


def _timestamp_error(
    kind: str, message: str, context: dict[str, Any] | None = None
) -> PydanticCustomError:
    return PydanticCustomError(f"timestamp_{kind}", message, context)


def _require_rfc3339_with_offset(value: Any) -> Any:
    """Parse an RFC 3339 string with an offset into an aware datetime.

    A hand check rather than pydantic's own datetime parsing, because that one
    accepts naive timestamps and Unix numbers, which the contract forbids.
    Errors are `PydanticCustomError`s so dead letters read
    `event_time: timestamp has no UTC offset ...` with a stable error type.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _timestamp_error("no_offset", "timestamp has no UTC offset")
        return _in_range(value)
    if not isinstance(value, str):
        raise _timestamp_error("type", "timestamp must be an RFC 3339 string")
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise _timestamp_error(
            "format", "timestamp must be RFC 3339, e.g. 2026-11-25T10:15:00+05:30"
        )
    date, time, fraction, offset = match.groups()
    if offset is None:
        raise _timestamp_error("no_offset", "timestamp has no UTC offset (write ...Z or ...+05:30)")
    if offset in ("Z", "z"):
        offset = "+00:00"
    # `fromisoformat` checks the calendar and clock ranges; digits beyond
    # microseconds are cut here (values are truncated to ms anyway).
    text = f"{date}T{time}{(fraction or '')[:7]}{offset}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _timestamp_error(
            "format", "timestamp is not RFC 3339: {error}", {"error": str(exc)}
        ) from None
    return _in_range(parsed)


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise _timestamp_error(
            "range",
            "timestamp is outside {min_year}-{max_year}",
            {"min_year": MIN_YEAR, "max_year": MAX_YEAR},
        )
    return utc


UtcDatetime = Annotated[
    datetime,
    BeforeValidator(_require_rfc3339_with_offset),
    AfterValidator(truncate_ms),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time", "pattern": RFC3339_OFFSET_PATTERN}),
]
"""An RFC 3339 timestamp with an offset, held as an aware UTC datetime (ms precision)."""
