"""DeadLetter envelope: deterministic id, original bytes, one-line reason."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fuzz_budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.dead_letter import (
    MAX_ERRORS,
    MAX_REASON,
    DeadLetter,
    DeadLetterSource,
    ErrorDetail,
    ReasonCode,
)
from schemas.plan import load_plan
from schemas.validation import RecordRejected, decode_input

NOW = datetime(2027, 3, 15, 12, 0, 0, 123456, tzinfo=UTC)
KAFKA = DeadLetterSource(kind="kafka", topic="scans", partition=3, offset=1234)


def _from_rejection(raw: bytes, source: DeadLetterSource = KAFKA) -> DeadLetter:
    with pytest.raises(RecordRejected) as caught:
        decode_input("scans", raw, plan=load_plan(None))
    return DeadLetter.build(raw, source, caught.value.errors, caught.value.reason_code, NOW)


def test_build_from_a_rejection() -> None:
    letter = _from_rejection(b'{"event_id": "e-1"')
    assert letter.reason_code is ReasonCode.NOT_JSON
    assert letter.reason.startswith("not_json: Invalid JSON: EOF while parsing")
    assert letter.raw_value() == b'{"event_id": "e-1"'
    assert letter.failed_at == NOW.replace(microsecond=123000)


def test_id_is_sha256_of_the_source_position() -> None:
    letter = _from_rejection(b"x")
    assert KAFKA.key() == "kafka|scans|3|1234||||"
    assert letter.dead_letter_id == hashlib.sha256(b"kafka|scans|3|1234||||").hexdigest()


def test_id_is_deterministic_and_position_specific() -> None:
    first = _from_rejection(b"x")
    again = _from_rejection(b"x")
    elsewhere = _from_rejection(b"x", KAFKA.model_copy(update={"offset": 1235}))
    assert first.dead_letter_id == again.dead_letter_id
    assert first.dead_letter_id != elsewhere.dead_letter_id


def test_an_http_id_also_hashes_the_item_so_a_reused_request_id_keeps_records_apart() -> None:
    """A client's X-Request-ID is its own choice: reused for another body, both dead
    letters had one id, and the sink, which keeps one row per id, would lose one."""
    http = DeadLetterSource(kind="http", request_id="reused-id-1", index=0)
    first, second = _from_rejection(b'{"first":1}', http), _from_rejection(b'{"second":2}', http)
    assert first.dead_letter_id != second.dead_letter_id
    assert _from_rejection(b'{"first":1}', http).dead_letter_id == first.dead_letter_id


def test_sources_of_each_kind() -> None:
    http = DeadLetterSource(kind="http", request_id="req-9", index=2)
    replay = DeadLetterSource(kind="replay", file="examples/x.ndjson", line=23)
    assert http.key() == "http||||req-9|||2"
    assert replay.key() == "replay|||||examples/x.ndjson|23|"
    with pytest.raises(ValidationError):
        DeadLetterSource.model_validate({"kind": "ftp"})


def test_reason_is_one_bounded_line() -> None:
    errors = [ErrorDetail(loc="a\nb", msg="x" * 1000 + "\n", type="t")] * 3
    letter = DeadLetter.build(b"", KAFKA, errors, "validation_failed", NOW)
    assert "\n" not in letter.reason
    assert len(letter.reason) <= MAX_REASON


def test_reason_summarises_first_error_and_count() -> None:
    errors = [
        ErrorDetail(
            loc="event_time", msg="timestamp has no UTC offset", type="timestamp_no_offset"
        ),
        ErrorDetail(loc="uom", msg="bad", type="enum"),
    ]
    letter = DeadLetter.build(b"{}", KAFKA, errors, ReasonCode.VALIDATION_FAILED, NOW)
    assert letter.reason == "validation_failed: event_time: timestamp has no UTC offset (+1 more)"


def test_reason_without_errors_is_the_code() -> None:
    letter = DeadLetter.build(b"{}", KAFKA, [], ReasonCode.OFF_ROUTE, NOW)
    assert letter.reason == "off_route"


def test_errors_are_capped() -> None:
    errors = [ErrorDetail(loc=str(i), msg="m", type="t") for i in range(100)]
    letter = DeadLetter.build(b"{}", KAFKA, errors, ReasonCode.VALIDATION_FAILED, NOW)
    assert len(letter.errors) == MAX_ERRORS
    assert letter.reason.endswith("(+99 more)")


def test_unknown_reason_code_is_refused() -> None:
    with pytest.raises(ValueError, match="no_such_code"):
        DeadLetter.build(b"{}", KAFKA, [], "no_such_code", NOW)


def test_null_value_and_key() -> None:
    letter = DeadLetter.build(None, KAFKA, [], ReasonCode.NOT_OBJECT, NOW, key=b"PO-1")
    assert letter.value_b64 is None
    assert letter.raw_value() is None
    assert letter.key_b64 == base64.b64encode(b"PO-1").decode()


def test_json_wire_form() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    letter = DeadLetter.build(b"\xff", KAFKA, [], ReasonCode.NOT_JSON, NOW.astimezone(ist))
    wire = json.loads(letter.model_dump_json())
    assert wire["failed_at"] == "2027-03-15T12:00:00.123Z"
    assert wire["value_b64"] == "/w=="
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


@settings(max_examples=examples(500), deadline=None)
@given(raw=st.binary(max_size=2048), key=st.none() | st.binary(max_size=64))
def test_build_round_trips_raw_bytes(raw: bytes, key: bytes | None) -> None:
    letter = DeadLetter.build(raw, KAFKA, [], ReasonCode.NOT_JSON, NOW, key=key)
    assert letter.raw_value() == raw
    assert base64.b64decode(letter.value_b64 or "") == raw
    if key is not None:
        assert base64.b64decode(letter.key_b64 or "") == key
    assert DeadLetter.model_validate_json(letter.model_dump_json()).raw_value() == raw
