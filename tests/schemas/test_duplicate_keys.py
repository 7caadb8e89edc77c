"""A key written twice in one object is refused on every input path (`schemas.json_keys`).

Parsers disagree on which of two equal keys counts (pydantic-core and Python keep
the last, others the first): a record checked with one value must not be read
with another downstream. `decode_input` is the check every path shares; the
gateway, EPCIS, engine codec and importer tests show each path uses it.
"""

from __future__ import annotations

import json

import pytest
from memory_peak import peak_memory
from samples import PLAN, SAMPLES_BY_TOPIC

from schemas.dead_letter import MAX_ERRORS, ReasonCode
from schemas.json_keys import repeated_keys
from schemas.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS
from schemas.validation import RecordRejected, decode_input, decode_replay_line


def _twice(topic: str, key: str, first: str) -> bytes:
    """A valid record of `topic` whose `key` is written first as `first`, then as sent."""
    text = json.dumps(SAMPLES_BY_TOPIC[topic]())
    assert f'"{key}": ' in text
    return text.replace(f'"{key}": ', f'"{key}": {first}, "{key}": ', 1).encode()


def _rejected(topic: str, raw: bytes) -> RecordRejected:
    with pytest.raises(RecordRejected) as caught:
        decode_input(topic, raw, plan=PLAN)
    return caught.value


@pytest.mark.parametrize(
    ("topic", "key", "first"),
    [
        (SCANS, "unit_id", '"KNIT-02"'),
        (SCANS, "quantity", "1"),
        (ORDERS, "quantity", "7"),
        (UNIT_STATUS, "unit_id", '"DYE-01"'),
        (UNIT_STATUS, "status", '"up"'),
        (CUSTOMERS, "tier", '"platinum"'),
    ],
)
def test_a_key_written_twice_is_validation_failed_at_that_key(
    topic: str, key: str, first: str
) -> None:
    raw = _twice(topic, key, first)
    decode_input(topic, raw.replace(f'"{key}": {first}, '.encode(), b"", 1), plan=PLAN)
    rejected = _rejected(topic, raw)
    assert rejected.reason_code is ReasonCode.VALIDATION_FAILED
    assert [(e.loc, e.type) for e in rejected.errors] == [(key, "duplicate_key")]
    assert repr(key) in rejected.errors[0].msg


def test_duplicates_inside_attributes_and_pass_through_fields_are_named_where() -> None:
    scan = json.dumps(SAMPLES_BY_TOPIC[SCANS]()).replace(
        '{"shade": "navy"}', '{"a": 1, "a": "x", "a": 2}'
    )
    rejected = _rejected(SCANS, scan.encode())
    assert [(e.loc, e.type) for e in rejected.errors] == [("attributes.a", "duplicate_key")]
    assert "3 times" in rejected.errors[0].msg
    crm = json.dumps(SAMPLES_BY_TOPIC[CUSTOMERS]())[:-1] + ', "x": [{"k": 1}, {"k": 1, "k": 2}]}'
    assert [e.loc for e in _rejected(CUSTOMERS, crm.encode()).errors] == ["x.1.k"]


def test_equal_objects_side_by_side_and_a_key_in_two_objects_are_no_duplicates() -> None:
    scan = SAMPLES_BY_TOPIC[SCANS]()
    scan["attributes"] = {"unit_id": "x", "stage": "y"}
    decode_input(SCANS, json.dumps(scan).encode(), plan=PLAN)
    assert repeated_keys('[{"a": 1}, {"a": 1}, {"b": {"a": 2}, "a": 3}]') == []


def test_a_key_escaped_otherwise_is_the_same_key() -> None:
    raw = _twice(SCANS, "unit_id", '"KNIT-02"').replace(
        b'"unit_id": "KNIT', b'"unit\\u005fid": "KNIT'
    )
    assert [e.loc for e in _rejected(SCANS, raw).errors] == ["unit_id"]


def test_a_duplicate_is_listed_beside_the_records_other_errors() -> None:
    raw = _twice(SCANS, "unit_id", '"KNIT-02"').replace(b'"dyeing"', b"5")
    rejected = _rejected(SCANS, raw)
    assert rejected.reason_code is ReasonCode.VALIDATION_FAILED
    assert {(e.loc, e.type) for e in rejected.errors} >= {
        ("stage", "string_type"),
        ("unit_id", "duplicate_key"),
    }


def test_only_the_outer_objects_keys_when_not_nested() -> None:
    """A replay line's own keys are replay's to refuse, its value's the engine's."""
    raw = '{"v": {"a": 1, "a": 2}, "t": 1, "t": 2, "t": 3}'
    errors = repeated_keys(raw, nested=False)
    assert [e.loc for e in errors] == ["t"]
    assert "'t' is written 3 times" in errors[0].msg
    assert repeated_keys('{"v": {"a": 1, "a": 2}}', nested=False) == []
    assert repeated_keys('[{"a": 1, "a": 2}]', nested=False) == []


def test_numbers_python_does_not_convert_do_not_hide_a_duplicate() -> None:
    huge = "9" * 5000  # Python's int() refuses it (the importer reads such lines)
    assert [e.loc for e in repeated_keys(f'{{"n": {huge}, "n": 1e400, "m": NaN}}')] == ["n"]
    assert repeated_keys(f'{{"n": {huge}, "m": 1}}') == []


def test_a_record_repeating_keys_in_many_objects_lists_only_the_first_max_errors() -> None:
    raw = json.dumps({"attributes": {}}).replace(
        "{}", "[" + ",".join(['{"a": 1, "a": 2}'] * 1000) + "]"
    )
    errors = repeated_keys(raw.encode())
    assert len(errors) == MAX_ERRORS
    assert errors[0].loc == "attributes.0.a"
    assert errors[-1].loc == f"attributes.{MAX_ERRORS - 1}.a"


def _peak_bytes(depth: int, siblings: int) -> int:
    """The memory `repeated_keys` takes at its peak for one repeated key beside a list
    `depth` deep holding `siblings` empty lists."""
    nested = "[" * depth + ",".join(["[]"] * siblings) + "]" * depth
    raw = ('{"a": 1, "a": 2, "deep": ' + nested + "}").encode()
    with peak_memory() as peak:
        assert len(repeated_keys(raw)) == 1
    return peak.bytes


def test_naming_a_repeated_key_costs_no_more_for_a_deep_value_than_a_flat_one() -> None:
    """Each node's whole path was held while the value was walked: memory grew with the
    depth times the nodes (one 870 kB item 190 deep took 560 MB)."""
    flat, deep = _peak_bytes(1, 20_000), _peak_bytes(150, 20_000)
    assert deep < 2 * flat, (flat, deep)


def _own_check_peak(inner: str) -> int:
    """The memory the outer-keys check takes at its peak for a line whose value holds
    20,000 objects written `inner`."""
    raw = '{"t": 1, "v": [' + ",".join([inner] * 20_000) + "]}"
    with peak_memory() as peak:
        assert repeated_keys(raw, nested=False) == []
    return peak.bytes


def test_the_outer_keys_cost_no_more_when_the_value_repeats_keys_than_when_not() -> None:
    """The check parsed the line again to name where, every object of it marked and its
    keys counted though only the outer one's were asked: an 8 MiB replay line whose value
    repeated a key in each of its objects took 2.7 s and 390 MB more to publish."""
    once, twice = _own_check_peak('{"a": 1, "b": 2}'), _own_check_peak('{"a": 1, "a": 2}')
    assert twice < 1.5 * once, (once, twice)


@pytest.mark.parametrize(
    "line",
    [
        '{"topic": "scans", "topic": "orders", "value": {}}',  # a valid line otherwise
        '{"topic": "scans", "topic": 5, "value": {}}',  # beside the model's own errors
    ],
)
def test_a_line_of_a_file_is_told_to_write_the_key_once_a_record_to_send_it_once(
    line: str,
) -> None:
    """ "so send it once" was said of a replay scenario's line too, as if it had been sent."""
    record = _rejected(SCANS, _twice(SCANS, "quantity", "1")).errors
    assert record[0].msg.endswith("so send it once")
    with pytest.raises(RecordRejected) as caught:
        decode_replay_line(line)
    twice = [e for e in caught.value.errors if e.type == "duplicate_key"]
    assert [e.loc for e in twice] == ["topic"]
    assert twice[0].msg.endswith("(the first or the last), so write it once")
