"""Identifier and timestamp rules shared by every input (CONTRACT.md, top)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.common import Identifier, StageName, UtcDatetime, format_utc, truncate_ms

IDS = TypeAdapter(Identifier)
STAGES = TypeAdapter(StageName)
TIMES = TypeAdapter(UtcDatetime)


@pytest.mark.parametrize(
    "value", ["PO-1001", "C-7", "a", "x" * 64, "urn:epc:1.2_3-4", "2b9f3c1e-7d4a-4c2e-9a51"]
)
def test_identifier_accepts_contract_charset(value: str) -> None:
    assert IDS.validate_python(value) == value


@pytest.mark.parametrize(
    "value", ["", "x" * 65, "PO 1001", "PO/1001", "é", "PO-1\n", "PO#1", "ПО-1"]
)
def test_identifier_rejects_bad_chars_and_length(value: str) -> None:
    with pytest.raises(ValidationError):
        IDS.validate_python(value)


def test_identifier_rejects_numbers_in_json() -> None:
    with pytest.raises(ValidationError):
        IDS.validate_json(b"1001")


@pytest.mark.parametrize("value", ["Dyeing", "1st", "", "dye-ing", "a" * 65])
def test_stage_name_spelling(value: str) -> None:
    with pytest.raises(ValidationError):
        STAGES.validate_python(value)


def _parse(text: Any) -> datetime:
    return TIMES.validate_python(text)


def test_offset_is_converted_to_utc() -> None:
    assert _parse("2026-11-25T10:15:00+05:30") == datetime(2026, 11, 25, 4, 45, tzinfo=UTC)
    assert _parse("2026-11-22T14:05:00+01:00") == datetime(2026, 11, 22, 13, 5, tzinfo=UTC)
    assert _parse("2026-11-22T14:05:00-03:00") == datetime(2026, 11, 22, 17, 5, tzinfo=UTC)
    assert _parse("2026-11-22T14:05:00Z").tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["2026-11-22t14:05:00z", "2026-11-22 14:05:00Z", "2026-11-22T14:05:00+00:00"]
)
def test_rfc3339_variants(text: str) -> None:
    assert _parse(text) == datetime(2026, 11, 22, 14, 5, tzinfo=UTC)


def test_fraction_is_truncated_to_milliseconds() -> None:
    assert _parse("2026-11-22T14:05:00.123999Z").microsecond == 123000
    assert _parse("2026-11-22T14:05:00.9999999Z").microsecond == 999000  # 7 digits
    assert _parse("2026-11-22T14:05:00.5+05:30").microsecond == 500000


@pytest.mark.parametrize(
    ("text", "error_type"),
    [
        ("2026-11-22T14:05:00", "timestamp_no_offset"),
        ("2026-11-22 14:05:00.250", "timestamp_no_offset"),
        ("2026-11-22T14:05:00+05", "timestamp_format"),
        ("2026-11-22T14:05:00+0530", "timestamp_format"),
        ("2026-11-22T14:05Z", "timestamp_format"),
        ("2026-11-22", "timestamp_format"),
        ("20261122T140500Z", "timestamp_format"),
        ("2026-13-22T14:05:00Z", "timestamp_format"),
        ("2026-02-30T14:05:00Z", "timestamp_format"),
        ("2026-11-22T24:00:00Z", "timestamp_format"),
        ("2026-11-22T14:05:00+24:00", "timestamp_format"),
        ("2026-11-22T14:05:00+12:60", "timestamp_format"),
        ("\uff12\uff10\uff12\uff16-11-22T14:05:00Z", "timestamp_format"),  # full-width digits
        ("0001-01-01T00:00:00+05:30", "timestamp_range"),
        ("9999-12-31T23:59:59-05:00", "timestamp_range"),
        ("1899-12-31T23:59:59Z", "timestamp_range"),
        (1764000000, "timestamp_type"),
        (None, "timestamp_type"),
    ],
)
def test_bad_timestamps_are_rejected_with_a_reason(text: Any, error_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _parse(text)
    assert caught.value.errors()[0]["type"] == error_type


def test_naive_datetime_object_is_rejected() -> None:
    with pytest.raises(ValidationError, match="no UTC offset"):
        _parse(datetime(2026, 11, 22, 14, 5))  # noqa: DTZ001 - the naive input under test


def test_aware_datetime_object_is_normalised() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    assert _parse(datetime(2026, 11, 25, 10, 15, 0, 123456, tzinfo=ist)) == datetime(
        2026, 11, 25, 4, 45, 0, 123000, tzinfo=UTC
    )


def test_json_form_is_canonical_utc_millis() -> None:
    value = _parse("2026-11-25T10:15:00.5+05:30")
    assert TIMES.dump_json(value) == b'"2026-11-25T04:45:00.500Z"'
    assert format_utc(value) == "2026-11-25T04:45:00.500Z"


def test_truncate_ms_never_rounds_up() -> None:
    value = datetime(2026, 1, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert truncate_ms(value) == datetime(2026, 1, 1, 23, 59, 59, 999000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 1, 1, 23, 59, 59, 999999, tzinfo=UTC), "2026-01-01T23:59:59.999Z"),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00.000Z"),
        (datetime(1000, 1, 1, 0, 0, 0, 1000, tzinfo=UTC), "1000-01-01T00:00:00.001Z"),
        (datetime(999, 12, 31, 23, 0, tzinfo=UTC), "999-12-31T23:00:00.000Z"),  # strftime's year
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "9999-12-31T23:59:59.999Z"),
        (_parse("2026-11-25T04:45:00.5009Z"), "2026-11-25T04:45:00.500Z"),  # pydantic's UTC
    ],
)
def test_format_utc_fast_path_equals_the_general_form(value: datetime, text: str) -> None:
    """The isoformat shortcut for UTC times must print what truncate + strftime prints."""
    general = truncate_ms(value)
    expected = general.strftime("%Y-%m-%dT%H:%M:%S.") + f"{general.microsecond // 1000:03d}Z"
    assert format_utc(value) == expected == text
