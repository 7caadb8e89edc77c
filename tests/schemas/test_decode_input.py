"""decode_input / decode_replay_line: bytes to a model or a RecordRejected with a reason code."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from samples import (
    EXAMPLES,
    PLAN,
    SAMPLES_BY_TOPIC,
    as_bytes,
    order_created,
    plan_with_qc,
    scan,
)

from schemas.customers import TOMBSTONE, Customer
from schemas.orders import OrderRecord, check_update_against
from schemas.scans import ScanEvent
from schemas.topics import INPUT_TOPICS
from schemas.unit_status import UnitStatus
from schemas.validation import (
    MODEL_BY_TOPIC,
    ReasonCode,
    RecordRejected,
    decode_input,
    decode_replay_line,
)

QC = "quality_check"


def _rejected(topic: str, raw: bytes | None, qc_stage: str = QC) -> RecordRejected:
    with pytest.raises(RecordRejected) as caught:
        decode_input(topic, raw, plan=plan_with_qc(qc_stage))
    return caught.value


@pytest.mark.parametrize(
    ("topic", "model"),
    [
        ("orders", OrderRecord),
        ("crm.customers", Customer),
        ("scans", ScanEvent),
        ("unit-status", UnitStatus),
    ],
)
def test_valid_records_decode_to_their_model(topic: str, model: type) -> None:
    assert isinstance(decode_input(topic, as_bytes(SAMPLES_BY_TOPIC[topic]()), plan=PLAN), model)


def test_model_map_covers_the_input_topics() -> None:
    assert set(MODEL_BY_TOPIC) == set(INPUT_TOPICS)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"\xff\xfe{}", b'{"a": "\xff"}', b"{'a': 1}", b"PO-1", b'{"a":1}{}']
)
def test_not_json(raw: bytes) -> None:
    rejected = _rejected("scans", raw)
    assert rejected.reason_code is ReasonCode.NOT_JSON
    assert rejected.errors[0].type == "json_invalid"


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"scan"', b"true", b"null", b" null "])
def test_not_object(raw: bytes) -> None:
    assert _rejected("scans", raw).reason_code is ReasonCode.NOT_OBJECT


@pytest.mark.parametrize("topic", ["orders", "scans", "unit-status"])
def test_kafka_null_outside_crm_is_not_object(topic: str) -> None:
    assert _rejected(topic, None).reason_code is ReasonCode.NOT_OBJECT


@pytest.mark.parametrize("raw", [None, b"null", b" null\n"])
def test_null_on_crm_is_a_tombstone(raw: bytes | None) -> None:
    assert decode_input("crm.customers", raw, plan=PLAN) is TOMBSTONE


def test_crm_non_object_is_still_rejected() -> None:
    assert _rejected("crm.customers", b"[]").reason_code is ReasonCode.NOT_OBJECT


def test_validation_errors_have_dotted_locations() -> None:
    raw = as_bytes(scan(attributes={"shade": "x" * 300}, uom="lb"))
    rejected = _rejected("scans", raw)
    assert rejected.reason_code is ReasonCode.VALIDATION_FAILED
    assert [(error.loc, error.type) for error in rejected.errors] == [
        ("uom", "enum"),
        ("attributes.shade", "attribute_too_long"),
    ]


def test_qc_stage_is_passed_through() -> None:
    raw = as_bytes(scan(stage="inspection", action="rejected"))
    assert isinstance(decode_input("scans", raw, plan=plan_with_qc("inspection")), ScanEvent)
    rejected = _rejected("scans", raw, qc_stage=QC)
    assert rejected.errors[0].loc == "action"


def test_unknown_topic_is_a_wiring_bug() -> None:
    with pytest.raises(ValueError, match="not an input topic"):
        decode_input("alerts", b"{}", plan=PLAN)


def test_record_rejected_message_is_one_line() -> None:
    rejected = _rejected("scans", as_bytes(scan(event_time="2027-03-15T20:00:00")))
    assert str(rejected) == (
        "validation_failed: event_time: timestamp has no UTC offset (write ...Z or ...+05:30)"
    )


# --- replay lines -----------------------------------------------------------------------------


def test_replay_line_round_trip() -> None:
    line = decode_replay_line(
        json.dumps({"topic": "orders", "key": "PO-1001", "value": order_created()})
    )
    assert line.key_bytes() == b"PO-1001"
    value = line.value_bytes()
    assert value is not None
    assert isinstance(decode_input(line.topic, value, plan=PLAN), OrderRecord)


def test_replay_tombstone_line() -> None:
    line = decode_replay_line(b'{"topic": "crm.customers", "key": "C-9", "value": null}')
    assert line.value_bytes() is None
    assert decode_input(line.topic, line.value_bytes(), plan=PLAN) is TOMBSTONE


def test_replay_non_object_value_is_left_to_the_consumer() -> None:
    line = decode_replay_line(b'{"topic": "scans", "key": "PO-1", "value": [1, 2]}')
    assert _rejected(line.topic, line.value_bytes()).reason_code is ReasonCode.NOT_OBJECT


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"orders"',
        b'{"topic": "orders"}',
        b'{"value": {}}',
        b'{"topic": "alerts", "value": {}}',
        b'{"topic": "prod.orders", "value": {}}',
        b'{"topic": "orders", "key": 7, "value": {}}',
    ],
)
def test_bad_replay_lines(raw: bytes) -> None:
    with pytest.raises(RecordRejected) as caught:
        decode_replay_line(raw)
    assert caught.value.reason_code is ReasonCode.BAD_REPLAY_LINE


@pytest.mark.parametrize(
    ("member", "first"),
    [
        ("value", json.dumps(scan(order_id="PO-2"))),  # which record is replayed
        ("value", "null"),
        ("topic", '"orders"'),  # to which topic
        ("key", '"PO-2"'),
        ("note", "1"),  # even one the line ignores: no key of it is the parser's choice
    ],
)
def test_a_replay_line_writing_a_key_of_its_own_twice_is_refused_naming_it(
    member: str, first: str
) -> None:
    """The parser kept the last `value` or `topic`: which record was replayed, and to
    which topic, was its choice and not the file's."""
    line = {"topic": "scans", "key": "PO-1", "value": scan(order_id="PO-1"), "note": 2}
    written = json.dumps(line)
    twice = written.replace(f'"{member}": ', f'"{member}": {first}, "{member}": ', 1)
    decode_replay_line(written)
    with pytest.raises(RecordRejected) as caught:
        decode_replay_line(twice)
    assert caught.value.reason_code is ReasonCode.BAD_REPLAY_LINE
    assert [(e.loc, e.type) for e in caught.value.errors] == [(member, "duplicate_key")]
    assert f"the key {member!r} is written twice" in caught.value.errors[0].msg


def test_a_replay_line_bad_and_writing_a_key_twice_says_both() -> None:
    with pytest.raises(RecordRejected) as caught:
        decode_replay_line(b'{"topic": "scans", "topic": "alerts", "value": {}}')
    assert caught.value.reason_code is ReasonCode.BAD_REPLAY_LINE
    assert [(e.loc, e.type) for e in caught.value.errors] == [
        ("topic", "literal_error"),
        ("topic", "duplicate_key"),
    ]


def test_a_key_the_replay_lines_value_writes_twice_is_left_to_the_engine() -> None:
    """Published as written, it is dead-lettered by the worker as a live record is."""
    value = json.dumps(scan()).replace('"unit_id": ', '"unit_id": "KNIT-02", "unit_id": ', 1)
    written = f'{{"topic": "scans", "value": {value}}}'.encode()
    line = decode_replay_line(written)
    rejected = _rejected(line.topic, line.value_as_written(written))
    assert [(e.loc, e.type) for e in rejected.errors] == [("unit_id", "duplicate_key")]


def test_unparseable_replay_line_is_not_json() -> None:
    with pytest.raises(RecordRejected) as caught:
        decode_replay_line(b'{"topic": "scans", "key": "PO-3401", "value": {"event_id": "ex4')
    assert caught.value.reason_code is ReasonCode.NOT_JSON


# --- example 4: six invalid records -----------------------------------------------------------


def _example_4() -> dict[int, bytes]:
    lines = (EXAMPLES / "example_4_bad_input.ndjson").read_bytes().splitlines()
    return dict(enumerate(lines, start=1))


def _decode_line(raw: bytes) -> object:
    line = decode_replay_line(raw)
    return decode_input(line.topic, line.value_bytes(), plan=PLAN)


@pytest.mark.parametrize(
    ("number", "reason_code", "loc"),
    [
        (9, ReasonCode.VALIDATION_FAILED, "action"),
        (12, ReasonCode.VALIDATION_FAILED, "status"),
        (17, ReasonCode.VALIDATION_FAILED, "tier"),
        (20, ReasonCode.VALIDATION_FAILED, "event_time"),
        (23, ReasonCode.NOT_JSON, ""),
    ],
)
def test_example_4_bad_lines(number: int, reason_code: ReasonCode, loc: str) -> None:
    with pytest.raises(RecordRejected) as caught:
        _decode_line(_example_4()[number])
    assert caught.value.reason_code is reason_code
    assert caught.value.errors[0].loc == loc


def test_example_4_line_5_is_a_bad_update_against_the_stored_order() -> None:
    lines = _example_4()
    created = _decode_line(lines[2])
    update = _decode_line(lines[5])
    assert isinstance(created, OrderRecord)
    assert isinstance(update, OrderRecord)
    assert created.placed_at == datetime(2027, 3, 10, 7, tzinfo=UTC)
    assert check_update_against(created.placed_at, update) == (
        "due_at 2027-03-09T07:00:00.000Z is not after placed_at 2027-03-10T07:00:00.000Z"
    )


def test_example_4_other_lines_are_valid() -> None:
    bad = {5, 9, 12, 17, 20, 23}
    for number, raw in _example_4().items():
        if number not in bad:
            _decode_line(raw)


@pytest.mark.parametrize(
    "name",
    [
        "example_1_on_time.ndjson",
        "example_2_late_handoff_qc.ndjson",
        "example_3_unit_down.ndjson",
    ],
)
def test_other_examples_are_all_valid(name: str) -> None:
    for raw in (EXAMPLES / name).read_bytes().splitlines():
        if raw.strip():
            assert _decode_line(raw) is not None
