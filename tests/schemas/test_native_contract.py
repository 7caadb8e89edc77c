"""Issue 11, item 1: the native (pydantic-core) JSON path decides exactly as the
Python reference rules, with the same error details.

The Python path of every model (`model_validate` on the parsed JSON) runs the
reference rules (`parse_timestamp`, `attribute_value`, `number_problem`); the
JSON path runs pydantic-core and translates its marker errors. Same input ->
same record or the same (loc, type, msg) errors.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fuzz_budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError
from samples import PLAN, SAMPLES_BY_TOPIC

from schemas.common import UtcDatetime, parse_timestamp
from schemas.dead_letter import ErrorDetail
from schemas.validation import MODEL_BY_TOPIC, RecordRejected, _context, decode_input, errors_from

TIMES = TypeAdapter(UtcDatetime)
FUZZ = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=examples(600)
)

digits = st.text(alphabet="0123456789", min_size=1, max_size=3)
pieces = st.sampled_from(
    ["2026", "1970", "1971", "2099", "2100", "0000", "9999", "-", ":", "T", "t", " ", "_", "Z",
     "z", "+", ".", "12", "13", "00", "23", "24", "59", "60", "30", "+05:30", "-01:00", "+24:00",
     "+0530", "\x1c", "\xa0", "\n", "\u2007", "\uff12", "\u0662", "e"]
)  # fmt: skip
near_rfc3339 = st.builds(
    lambda date, sep, time, frac, off, pre, post: f"{pre}{date}{sep}{time}{frac}{off}{post}",
    st.sampled_from(["2026-11-22", "1970-12-31", "1971-01-01", "2099-12-31", "2100-01-01",
                     "2026-02-30", "2026-13-01", "0001-01-01", "2024-02-29"]),
    st.sampled_from(["T", "t", " ", "_", "TT", ""]),
    st.sampled_from(["14:05:00", "23:59:60", "24:00:00", "00:00:00", "14:05", "1:05:00"]),
    st.sampled_from(["", ".", ".5", ".123", ".0009999", ".123456789", ".9999999"]),
    st.sampled_from(["Z", "z", "", "+05:30", "-01:00", "+24:00", "+23:59", "+0530", "+05",
                     "-00:00", "+12:60"]),
    st.sampled_from(["", " ", "\x1c", "\xa0", "\t\n"]),
    st.sampled_from(["", " ", "\x1c", "\u3000"]),
)  # fmt: skip
timestamp_texts = near_rfc3339 | st.lists(pieces, max_size=8).map("".join) | st.text(max_size=40)


def _reference(value: Any) -> tuple[Any, tuple[str, str] | None]:
    try:
        return parse_timestamp(value), None
    except PydanticCustomError as err:
        return None, (err.type, err.message())


def _native(raw: bytes) -> tuple[Any, tuple[str, str] | None]:
    try:
        return TIMES.validate_json(raw), None
    except ValidationError as exc:
        (error,) = errors_from(exc)
        assert error.loc == ""
        return None, (error.type, error.msg)


@pytest.mark.slow
@FUZZ
@given(text=timestamp_texts)
def test_native_timestamps_accept_and_refuse_exactly_as_the_reference(text: str) -> None:
    ref_value, ref_error = _reference(text)
    value, error = _native(json.dumps(text).encode())
    assert error == ref_error
    assert value == ref_value
    if value is not None:
        assert value.tzinfo is ref_value.tzinfo
        assert value.microsecond % 1000 == 0


@pytest.mark.parametrize("raw", [b"1764000000", b"null", b"true", b"{}", b"[]", b"1.5"])
def test_a_timestamp_that_is_not_a_string_has_the_reference_error(raw: bytes) -> None:
    assert _native(raw) == _reference(json.loads(raw))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | timestamp_texts
    | st.sampled_from(["x" * 300, "quality_check", "rejected", "spinning", "kg", "gold"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _outcome_json(topic: str, record: dict[str, Any]) -> Any:
    try:
        return decode_input(topic, json.dumps(record).encode(), plan=PLAN)
    except RecordRejected as rejected:
        return rejected.errors


def _outcome_python(topic: str, record: dict[str, Any]) -> Any:
    model = MODEL_BY_TOPIC[topic]
    try:
        # The parsed JSON, as the Python path sees it (json.loads turns NaN into nan too).
        return model.model_validate(json.loads(json.dumps(record)), context=_context(PLAN))
    except ValidationError as exc:
        return errors_from(exc)


@FUZZ
@given(
    topic=st.sampled_from(list(MODEL_BY_TOPIC)),
    data=st.data(),
)
@pytest.mark.slow
def test_the_json_path_decides_as_the_python_reference_path(
    topic: str, data: st.DataObject
) -> None:
    record = SAMPLES_BY_TOPIC[topic]()
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        field = data.draw(st.sampled_from(sorted(record)))
        record[field] = data.draw(json_values)
    native, reference = _outcome_json(topic, record), _outcome_python(topic, record)
    if isinstance(reference, list):
        assert isinstance(native, list)
        assert [_key(e) for e in native] == [_key(e) for e in reference]
    else:
        assert native == reference


_OURS = ("timestamp_", "attribute_", "unsafe_integer", "not_finite", "unknown_stage", "rejected_")


def _key(error: ErrorDetail) -> tuple[str, str, str]:
    """pydantic words some built-in errors differently for JSON and Python input
    ("an object" / "a valid dictionary"); the contract's own errors must match exactly."""
    return error.loc, error.type, error.msg if error.type.startswith(_OURS) else ""
