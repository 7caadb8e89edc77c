"""CONTRACT.md v1.2: "A dead letter never exceeds the topic's maximum message size:
an oversized original is truncated, with `truncated: true` and the original's size
and SHA-256." (issue 10, M12: an 800 KB invalid item made a 1,067,410-byte envelope
that the broker refused forever.)"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from fuzz_budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.dead_letter import (
    KAFKA_MAX_MESSAGE_BYTES,
    MAX_DEAD_LETTER_BYTES,
    MAX_TRUNCATED_KEY_BYTES,
    MAX_TRUNCATED_TEXT,
    DeadLetter,
    DeadLetterSource,
    ErrorDetail,
    ReasonCode,
)
from schemas.plan import load_plan
from schemas.validation import RecordRejected, decode_input

NOW = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
HTTP = DeadLetterSource(kind="http", request_id="req-1", index=0)


def _rejected(raw: bytes) -> RecordRejected:
    with pytest.raises(RecordRejected) as caught:
        decode_input("scans", raw, plan=load_plan(None))
    return caught.value


def test_an_800_kb_invalid_item_gives_a_dead_letter_under_the_kafka_maximum() -> None:
    raw = json.dumps({"event_id": "e-1", "order_id": "x" * 800_000}).encode()
    rejected = _rejected(raw)
    letter = DeadLetter.build(raw, HTTP, rejected.errors, rejected.reason_code, NOW)
    wire = letter.encode()
    assert len(wire) <= MAX_DEAD_LETTER_BYTES < KAFKA_MAX_MESSAGE_BYTES - 60_000
    assert letter.truncated is True
    assert letter.original_size == len(raw)
    assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()
    kept = letter.raw_value()
    assert kept is not None
    assert raw.startswith(kept)
    assert len(kept) < len(raw)
    # The envelope uses its room: the value prefix is within 4 bytes of the limit.
    assert MAX_DEAD_LETTER_BYTES - len(wire) < 4
    assert DeadLetter.model_validate_json(wire) == letter


def test_a_dead_letter_that_fits_is_not_truncated() -> None:
    raw = b'{"event_id": "e-1"'
    letter = DeadLetter.build(raw, HTTP, [], ReasonCode.NOT_JSON, NOW)
    assert letter.truncated is False
    assert letter.original_size is None
    assert letter.original_sha256 is None
    assert letter.original_key_size is None
    assert letter.original_key_sha256 is None
    assert letter.raw_value() == raw
    wire = json.loads(letter.encode())
    assert wire["truncated"] is False


def test_exactly_at_the_limit_is_kept_whole_and_one_byte_more_is_cut() -> None:
    raw = b"x" * 3000
    whole = DeadLetter.build(raw, HTTP, [], ReasonCode.NOT_JSON, NOW)
    size = len(whole.encode())
    assert DeadLetter.build(raw, HTTP, [], ReasonCode.NOT_JSON, NOW, max_bytes=size) == whole
    cut = DeadLetter.build(raw, HTTP, [], ReasonCode.NOT_JSON, NOW, max_bytes=size - 1)
    assert cut.truncated
    assert len(cut.encode()) <= size - 1


def test_an_oversized_key_is_cut_with_its_size_and_sha256() -> None:
    key = b"k" * 2_000_000
    letter = DeadLetter.build(b"{}", HTTP, [], ReasonCode.KEY_MISMATCH, NOW, key=key)
    assert len(letter.encode()) <= MAX_DEAD_LETTER_BYTES
    assert letter.truncated is True
    assert base64.b64decode(letter.key_b64 or "") == key[:MAX_TRUNCATED_KEY_BYTES]
    assert letter.original_key_size == len(key)
    assert letter.original_key_sha256 == hashlib.sha256(key).hexdigest()
    assert letter.raw_value() == b"{}"


def test_oversized_error_text_is_bounded_and_errors_shed_to_fit() -> None:
    # A `loc` can name an oversized JSON key; 32 such errors alone exceed a small limit.
    errors = [ErrorDetail(loc="a" * 100_000, msg="m" * 1000, type="t")] * 32
    letter = DeadLetter.build(
        b"v" * 50_000, HTTP, errors, ReasonCode.VALIDATION_FAILED, NOW, max_bytes=8000
    )
    assert len(letter.encode()) <= 8000
    assert letter.truncated is True
    assert 1 <= len(letter.errors) < 32
    assert all(len(e.loc) <= MAX_TRUNCATED_TEXT for e in letter.errors)
    assert len(letter.reason) <= 300


def test_a_limit_too_small_for_any_envelope_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="cannot fit in 100 bytes"):
        DeadLetter.build(b"x" * 1000, HTTP, [], ReasonCode.NOT_JSON, NOW, max_bytes=100)


@settings(max_examples=examples(300), deadline=None)
@given(
    raw=st.none() | st.binary(max_size=20_000),
    key=st.none() | st.binary(max_size=3000),
    loc=st.text(max_size=3000),
    n_errors=st.integers(min_value=0, max_value=40),
    max_bytes=st.integers(min_value=1500, max_value=30_000),
)
def test_a_dead_letter_never_exceeds_max_bytes(
    raw: bytes | None, key: bytes | None, loc: str, n_errors: int, max_bytes: int
) -> None:
    errors = [ErrorDetail(loc=loc, msg="bad\u2028\x00", type="t")] * n_errors
    letter = DeadLetter.build(
        raw, HTTP, errors, ReasonCode.VALIDATION_FAILED, NOW, key=key, max_bytes=max_bytes
    )
    wire = letter.encode()
    assert len(wire) <= max_bytes
    kept = letter.raw_value()
    if raw is None:
        assert kept is None
    else:
        assert kept is not None
        assert raw.startswith(kept)
        if letter.truncated:
            assert letter.original_size == len(raw)
            assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()
        else:
            assert kept == raw
    assert DeadLetter.model_validate_json(wire) == letter


def test_every_reason_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "dead-letters.md").read_text("utf-8")
    for code in ReasonCode:
        assert f"`{code.value}`" in doc, code
    assert {"processing_error", "order_closed", "key_mismatch"} <= {c.value for c in ReasonCode}
