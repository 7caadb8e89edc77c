"""Field types shared by every record of the contract (CONTRACT.md, v1.2).

Timestamps must carry an offset: a naive timestamp is ambiguous across the
factory sites (they write `+05:30`, `+01:00`, `Z`), so it is invalid input
rather than silently assumed UTC. Everything is normalised to UTC and
truncated to milliseconds, the precision ClickHouse stores
(`DateTime64(3, 'UTC')`) and the rules compare at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

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


_NO_OFFSET = timedelta(0)


def format_utc(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.fffZ`, the canonical wire and `alert_id` form.

    A UTC time of a four-digit year takes `isoformat`, which truncates to
    milliseconds as `truncate_ms` does and costs a fifth of `strftime`: every
    alert id formats its deadline. Other years and offsets take the general path
    (`strftime` does not zero-pad years below 1000).
    """
    if value.utcoffset() == _NO_OFFSET and value.year >= 1000:
        return value.isoformat(timespec="milliseconds")[:-6] + "Z"
    value = truncate_ms(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
"""RFC 3339 `date-time` (section 5.6), ASCII digits only; the offset group is
optional here only so that a missing offset gets its own, clearer error message."""

RFC3339_OFFSET_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
r"""The same rule for JSON Schema users: in draft 2020-12 `format` is only an
annotation, so the offset requirement is also stated as a pattern (ECMA-262
`\d` is ASCII)."""

_NATIVE_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
r"""The pattern pydantic-core checks (its Rust `\d` would match any Unicode digit)."""

_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Unicode White_Space: what pydantic-core's `strip_whitespace` removes (Rust's
`str::trim`). Python's `str.strip()` also removes U+001C-U+001F; the reference
parser below uses this set so that both paths accept exactly the same strings."""

MIN_TIME = datetime(1971, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)
"""CONTRACT.md v1.2: timestamps lie in [1971-01-01, 2100-01-01) (ClickHouse's
`DateTime64` range and TTL arithmetic). Bounding them also keeps the rules'
deadline arithmetic (timestamp + durations) far from `datetime`'s overflow."""

MAX_SAFE_INTEGER = 2**53
"""CONTRACT.md v1.2: numbers are JSON numbers a 64-bit float holds; integers
beyond +-2^53 are invalid wherever they appear."""

TIMESTAMP_ERROR = "timestamp_invalid"
"""The error type pydantic-core raises for a bad timestamp in JSON input. It is
a marker: `schemas.validation` replaces it with the exact error of the
reference parser (`parse_timestamp`), so dead letters and 422 bodies read as
before (`timestamp_no_offset`, `timestamp_format`, ...)."""


def _timestamp_error(
    kind: str, message: str, context: dict[str, Any] | None = None
) -> PydanticCustomError:
    return PydanticCustomError(f"timestamp_{kind}", message, context)


def parse_timestamp(
    value: Any, min_time: datetime = MIN_TIME, max_time: datetime = MAX_TIME
) -> datetime:
    """The reference rule: an RFC 3339 string (or aware datetime) -> UTC, ms precision.

    JSON input is parsed natively by pydantic-core (`UtcDatetime`); this parser
    serves Python input (`model_validate`, constructors) and, on the error path
    only, explains why a JSON timestamp was refused. It accepts exactly the
    strings the native path accepts (a tested property). Errors are
    `PydanticCustomError`s so dead letters read `event_time: timestamp has no
    UTC offset ...` with a stable error type.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _timestamp_error("no_offset", "timestamp has no UTC offset")
        return truncate_ms(_in_range(value, min_time, max_time))
    if not isinstance(value, str):
        raise _timestamp_error("type", "timestamp must be an RFC 3339 string")
    match = _RFC3339.fullmatch(value.strip(_WHITESPACE))
    if match is None:
        raise _timestamp_error(
            "format", "timestamp must be RFC 3339, e.g. 2026-11-25T10:15:00+05:30"
        )
    date, time, fraction, offset = match.groups()
    if offset is None:
        raise _timestamp_error("no_offset", "timestamp has no UTC offset (write ...Z or ...+05:30)")
    if offset in ("Z", "z"):
        offset = "+00:00"
    elif int(offset[4:]) > 59:  # `fromisoformat` takes +12:60; RFC 3339 (and pydantic-core) not
        raise _timestamp_error(
            "format", "timestamp is not RFC 3339: {error}", {"error": "offset minutes exceed 59"}
        )
    # `fromisoformat` checks the calendar and clock ranges; digits beyond
    # microseconds are cut here (values are truncated to ms anyway).
    text = f"{date}T{time}{(fraction or '')[:7]}{offset}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _timestamp_error(
            "format", "timestamp is not RFC 3339: {error}", {"error": str(exc)}
        ) from None
    return truncate_ms(_in_range(parsed, min_time, max_time))


def _in_range(value: datetime, min_time: datetime, max_time: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not min_time <= utc < max_time:
        raise _timestamp_error(
            "range",
            "timestamp is outside {min} - {max}",
            {"min": min_time.date().isoformat(), "max": max_time.date().isoformat()},
        )
    return utc


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _utc_ms(value: datetime) -> datetime:
    """Native-parsed (aware, in range) -> UTC at ms precision: the one Python step left.

    pydantic-core has no conversion to UTC; epoch arithmetic is the cheapest
    exact form (about a third faster than `astimezone` + `replace`).
    """
    return _EPOCH + (value - _EPOCH) // _MS * _MS


@dataclass(frozen=True)
class _UtcDatetimeSchema:
    """A `UtcDatetime`'s validation: native in JSON mode, the reference parser in Python mode.

    JSON mode is a pydantic-core chain: a string (surrounding whitespace
    stripped) matching the RFC 3339 pattern with an offset, then a native datetime parse
    bounded by `min_time` <= t < `max_time` (offset-aware comparison), then
    conversion to UTC with ms precision. Any failure is one `timestamp_invalid`
    error that `schemas.validation` translates (see `TIMESTAMP_ERROR`).
    """

    min_time: datetime
    max_time: datetime

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        native = core_schema.custom_error_schema(
            core_schema.chain_schema(
                [
                    core_schema.str_schema(
                        pattern=_NATIVE_PATTERN, strip_whitespace=True, strict=True
                    ),
                    core_schema.datetime_schema(ge=self.min_time, lt=self.max_time),
                ]
            ),
            custom_error_type=TIMESTAMP_ERROR,
            custom_error_message=(
                "timestamp must be RFC 3339 with a UTC offset, in {min_time} - {max_time}"
            ),
            custom_error_context={
                "min_time": self.min_time.isoformat(),
                "max_time": self.max_time.isoformat(),
            },
        )
        bounds = (self.min_time, self.max_time)
        return core_schema.json_or_python_schema(
            json_schema=core_schema.no_info_after_validator_function(_utc_ms, native),
            python_schema=core_schema.no_info_plain_validator_function(
                lambda value: parse_timestamp(value, *bounds)
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(
                format_utc, return_schema=core_schema.str_schema(), when_used="json"
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time", "pattern": RFC3339_OFFSET_PATTERN}

    def parse(self, value: Any) -> datetime:
        return parse_timestamp(value, self.min_time, self.max_time)


INPUT_TIMESTAMP = _UtcDatetimeSchema(MIN_TIME, MAX_TIME)
OUTPUT_TIMESTAMP = _UtcDatetimeSchema(
    datetime(1900, 1, 1, tzinfo=UTC), datetime(2300, 1, 1, tzinfo=UTC)
)

UtcDatetime = Annotated[datetime, INPUT_TIMESTAMP]
"""An RFC 3339 timestamp with an offset in [1971-01-01, 2100-01-01), held as an
aware UTC datetime (ms precision): every timestamp of an input record."""

DerivedUtcDatetime = Annotated[datetime, OUTPUT_TIMESTAMP]
"""The same, for times the engine derives (deadlines, ETAs: an input time plus
durations), which may pass 2100: bounded by ClickHouse's `DateTime64(3)` range."""


# --- numbers (CONTRACT.md v1.2) -------------------------------------------------------

NUMBER_ERROR = "json_number_invalid"
"""Marker error type of `SafeJson` in JSON input; translated like `TIMESTAMP_ERROR`."""


def number_problem(value: Any) -> tuple[tuple[str | int, ...], PydanticCustomError] | None:
    """The first number (in document order) a 64-bit float does not hold, and why.

    Integers beyond +-2^53, NaN and +-Infinity (a literal such as `1e400`
    parses as infinity) anywhere in a parsed JSON value. Iterative, so a
    deeply nested value cannot exhaust the stack. Nearly every value has no such
    number: a quick walk without paths says so (building a path per node cost an
    EPCIS capture of 500 events 12-25 % of its judging); only when it finds one is
    the value walked again for the first one's path.
    """
    return next(number_problems(value), None)


def number_problems(
    value: Any,
) -> Iterator[tuple[tuple[str | int, ...], PydanticCustomError]]:
    """Every number `number_problem` would name, in document order (the first one first)."""
    if not _holds_bad_number(value):
        return
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if item is None or isinstance(item, str | bool):
            continue
        if isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                yield (
                    path,
                    PydanticCustomError(
                        "unsafe_integer",
                        "integers must lie within +-2^53 ({limit}); send larger ones as strings",
                        {"limit": MAX_SAFE_INTEGER},
                    ),
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                yield (
                    path,
                    PydanticCustomError(
                        "not_finite", "numbers must be finite (no NaN, Infinity or overflow)"
                    ),
                )
        elif isinstance(item, dict):
            stack.extend(((*path, k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(item))))


def _holds_bad_number(value: Any) -> bool:
    """Whether `number_problem` finds anything (the same checks, no paths, any order)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, str | bool):
            continue
        if isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return True
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _safe_python(value: Any) -> Any:
    """Python mode and the native path's last resort: reject what `number_problem` finds."""
    problem = number_problem(value)
    if problem is not None:
        raise problem[1]
    return value


class _SafeJsonSchema:
    """Any JSON value whose numbers a 64-bit float holds (pass-through and unknown fields).

    JSON mode is native for strings, booleans, null, integers within +-2^53 and
    finite floats within +-2^53; arrays, objects, a float literal beyond 2^53
    (`1e20`, valid) and bad numbers are checked in Python (`number_problem`).
    """

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return safe_json_core_schema()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"description": "Any JSON value; numbers must be finite and integers within +-2^53."}


def safe_json_core_schema() -> core_schema.CoreSchema:
    """Native union for scalars; arrays, objects and exotic floats go to `_safe_python`."""
    native = core_schema.union_schema(
        [
            core_schema.str_schema(strict=True),
            core_schema.bool_schema(strict=True),
            core_schema.none_schema(),
            core_schema.int_schema(strict=True, ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER),
            core_schema.float_schema(
                strict=True, allow_inf_nan=False, gt=-MAX_SAFE_INTEGER, lt=MAX_SAFE_INTEGER
            ),
            core_schema.no_info_plain_validator_function(_safe_python),
        ],
        mode="left_to_right",
        custom_error_type=NUMBER_ERROR,
        custom_error_message="numbers must be finite and integers within +-2^53",
    )
    return core_schema.json_or_python_schema(
        json_schema=native,
        python_schema=core_schema.no_info_plain_validator_function(_safe_python),
    )


SafeJson = Annotated[Any, _SafeJsonSchema]
"""Any JSON value; numbers must be finite and integers within +-2^53 (CONTRACT.md v1.2)."""
