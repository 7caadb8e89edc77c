"""CONTRACT.md "Clarifications (v1.2)", as `decode_input` checks them on every input path.

Each test is named after the contract sentence it checks. The gateway, the
engine's codec, the sink and `replay` all call `decode_input`, so what holds
here holds on each path alike (the replay-line test shows one).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fuzz_budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from samples import PLAN, SAMPLES_BY_TOPIC, customer, order_created, scan, unit_status

from schemas.customers import TOMBSTONE, Customer
from schemas.dead_letter import ReasonCode
from schemas.plan import load_plan
from schemas.scans import ScanEvent
from schemas.validation import (
    DEFAULT_MAX_CLOCK_SKEW,
    ID_FIELD_BY_TOPIC,
    RecordRejected,
    check_clock_skew,
    decode_input,
    decode_replay_line,
)

BIG = 2**53 + 1


def _raw(value: dict[str, Any]) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _rejected(topic: str, raw: bytes | None, key: bytes | None = None) -> RecordRejected:
    with pytest.raises(RecordRejected) as caught:
        decode_input(topic, raw, plan=PLAN, key=key)
    return caught.value


def _with_unknown_field(topic: str, value: Any) -> bytes:
    return _raw({**SAMPLES_BY_TOPIC[topic](), "x_unknown": value})


# --- numbers -----------------------------------------------------------------------------

BAD_NUMBERS = [
    ("big_int", BIG, "unsafe_integer"),
    ("negative_big_int", -BIG, "unsafe_integer"),
    ("int_beyond_64_bits", 2**70, "unsafe_integer"),
    ("nan", float("nan"), "not_finite"),
    ("infinity", float("inf"), "not_finite"),
    ("minus_infinity", float("-inf"), "not_finite"),
]


@pytest.mark.parametrize(("name", "number", "error"), BAD_NUMBERS, ids=[b[0] for b in BAD_NUMBERS])
@pytest.mark.parametrize("topic", ["orders", "crm.customers", "scans", "unit-status"])
def test_integers_beyond_2_53_nan_and_infinity_are_invalid_wherever_they_appear(
    topic: str, name: str, number: float, error: str
) -> None:
    for value, loc in [
        (number, "x_unknown"),
        ({"deep": [1, {"n": number}]}, "x_unknown.deep.1.n"),
    ]:
        rejected = _rejected(topic, _with_unknown_field(topic, value))
        assert rejected.reason_code is ReasonCode.VALIDATION_FAILED
        assert [(e.loc, e.type) for e in rejected.errors] == [(loc, error)]


@pytest.mark.parametrize("number", [BIG, -BIG, 2**70, 2**64 + 1])
def test_integers_beyond_2_53_are_invalid_also_inside_attributes(number: int) -> None:
    rejected = _rejected("scans", _raw(scan(attributes={"gauge": number})))
    assert [(e.loc, e.type) for e in rejected.errors] == [("attributes.gauge", "unsafe_integer")]


@pytest.mark.parametrize("number", [BIG, 2**70])
def test_integers_beyond_2_53_are_invalid_also_inside_crm_pass_through_fields(number: int) -> None:
    rejected = _rejected("crm.customers", _raw(customer(credit={"limit": number})))
    assert [(e.loc, e.type) for e in rejected.errors] == [("credit.limit", "unsafe_integer")]
    rejected = _rejected("crm.customers", _raw(customer(credit_limit=number)))
    assert [(e.loc, e.type) for e in rejected.errors] == [("credit_limit", "unsafe_integer")]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_nan_and_infinity_are_invalid_also_inside_attributes_and_crm_pass_through_fields(
    literal: bytes,
) -> None:
    raw = _raw(scan(attributes={"gauge": 0})).replace(b'"gauge": 0', b'"gauge": ' + literal)
    assert _rejected("scans", raw).errors[0].loc == "attributes.gauge"
    raw = _raw(customer(score=0)).replace(b'"score": 0', b'"score": ' + literal)
    rejected = _rejected("crm.customers", raw)
    assert [(e.loc, e.type) for e in rejected.errors] == [("score", "not_finite")]


def test_numbers_a_64_bit_float_holds_are_valid() -> None:
    limits = {"max": 2**53, "min": -(2**53), "big_float": 1e20, "tiny": 5e-324, "f": 2.5}
    record = decode_input("scans", _raw(scan(attributes=limits)), plan=PLAN)
    assert record.attributes == limits  # type: ignore[union-attr]
    assert isinstance(record.attributes["max"], int)  # type: ignore[union-attr,index]
    crm = decode_input("crm.customers", _raw(customer(nested={"n": [2**53, 1e300]})), plan=PLAN)
    assert isinstance(crm, Customer)
    assert crm.model_extra == {"nested": {"n": [2**53, 1e300]}}
    decode_input("orders", _with_unknown_field("orders", 1e20), plan=PLAN)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@pytest.mark.slow
@settings(max_examples=examples(400), deadline=None)
@given(attr=json_values, extra=json_values)
def test_every_accepted_record_is_writable_by_orjson(attr: Any, extra: Any) -> None:
    """Issue 10, H2: an accepted record never crashes a JSON writer downstream (the sink)."""
    for topic, raw in [
        ("scans", _raw(scan(attributes={"a": attr}, extra=extra))),
        ("crm.customers", _raw(customer(extra=extra, attr=attr))),
    ]:
        try:
            record = decode_input(topic, raw, plan=PLAN)
        except RecordRejected:
            continue
        assert isinstance(record, Customer | ScanEvent)
        orjson.dumps(record.model_dump(mode="python"))


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1971-01-01T00:00:00Z",
        "1971-01-01T05:30:00+05:30",
        "1970-12-31T23:00:00-01:00",
        "2099-12-31T23:59:59.999Z",
        "2100-01-01T05:29:00+05:30",
    ],
)
def test_timestamps_lie_between_1971_01_01_and_2100_01_01_inclusive_edges(text: str) -> None:
    decode_input("scans", _raw(scan(event_time=text)), plan=PLAN)


@pytest.mark.parametrize(
    "text",
    [
        "1970-12-31T23:59:59.999Z",
        "1971-01-01T05:29:59+05:30",
        "2100-01-01T00:00:00Z",
        "2099-12-31T23:30:00-01:00",
        "2299-01-01T00:00:00Z",
        "1900-01-01T00:00:00Z",
    ],
)
@pytest.mark.parametrize(
    ("topic", "make", "field"),
    [
        ("scans", scan, "event_time"),
        ("unit-status", unit_status, "event_time"),
        ("unit-status", unit_status, "expected_up_at"),
        ("orders", order_created, "placed_at"),
        ("orders", order_created, "event_time"),
        ("crm.customers", customer, "updated_at"),
    ],
)
def test_timestamps_outside_1971_to_2100_are_invalid_in_every_timestamp_field(
    text: str, topic: str, make: Any, field: str
) -> None:
    value = make(**{field: text})
    if field == "placed_at":
        value["due_at"] = (
            "2100-06-01T00:00:00Z" if text < "2000" else text.replace("-01-01", "-12-01")
        )
    rejected = _rejected(topic, _raw(value))
    assert (rejected.errors[0].loc, rejected.errors[0].type) == (field, "timestamp_range")
    assert rejected.errors[0].msg == "timestamp is outside 1971-01-01 - 2100-01-01"


# --- unit status stage ---------------------------------------------------------------------


def test_unit_status_stage_when_present_must_be_a_stage_of_the_sla_plan() -> None:
    rejected = _rejected("unit-status", _raw(unit_status(stage="spinning")))
    assert rejected.reason_code is ReasonCode.VALIDATION_FAILED
    assert [(e.loc, e.type, e.msg) for e in rejected.errors] == [
        ("stage", "unknown_stage", "'spinning' is not a stage of the SLA plan")
    ]
    for stage in PLAN.route:
        decode_input("unit-status", _raw(unit_status(stage=stage)), plan=PLAN)
    absent = {k: v for k, v in unit_status().items() if k != "stage"}
    assert decode_input("unit-status", _raw(absent), plan=PLAN).stage is None  # type: ignore[union-attr]


def test_unit_status_stage_is_checked_against_the_configured_plan() -> None:
    plan = load_plan(None)
    data = plan.model_dump()
    data["route"] = [*plan.route[:4], "inspection", *plan.route[4:]]
    data["stage_duration"] = {**data["stage_duration"], "inspection": timedelta(hours=2)}
    other = type(plan).model_validate(data)
    raw = _raw(unit_status(stage="inspection"))
    assert decode_input("unit-status", raw, plan=other).stage == "inspection"  # type: ignore[union-attr]
    assert _rejected("unit-status", raw).errors[0].type == "unknown_stage"


def test_an_order_route_names_stages_of_the_sla_plan_only() -> None:
    """A route with `spinning` decoded, and the engine refused it later as a bad
    `due_at`; it is invalid input, as a unit status naming that stage."""
    rejected = _rejected("orders", _raw(order_created(route=["spinning", "dyeing"])))
    assert rejected.reason_code is ReasonCode.VALIDATION_FAILED
    assert [(e.loc, e.type, e.msg) for e in rejected.errors] == [
        ("route", "unknown_stage", "route names 'spinning', not a stage of the SLA plan")
    ]
    decode_input("orders", _raw(order_created(route=list(PLAN.route[:3]))), plan=PLAN)


def test_a_scan_stage_is_checked_against_the_route_by_the_engine_not_by_decode() -> None:
    # RULES.md: a scan's stage is checked against the order's route (state), so
    # any well-spelled stage decodes here and the engine dead-letters it `off_route`.
    decode_input("scans", _raw(scan(stage="spinning")), plan=PLAN)


# --- key and id --------------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["orders", "crm.customers", "scans", "unit-status"])
def test_a_record_whose_kafka_key_differs_from_its_id_is_a_dead_letter_with_its_own_reason(
    topic: str,
) -> None:
    value = SAMPLES_BY_TOPIC[topic]()
    field = ID_FIELD_BY_TOPIC[topic]
    raw = _raw(value)
    rejected = _rejected(topic, raw, key=b"OTHER-1")
    assert rejected.reason_code is ReasonCode.KEY_MISMATCH
    assert [(e.loc, e.type) for e in rejected.errors] == [(field, "key_mismatch")]
    assert (
        rejected.errors[0].msg == f"the record key 'OTHER-1' differs from {field} {value[field]!r}"
    )
    # Key present and equal, or absent: the record is valid.
    decode_input(topic, raw, plan=PLAN, key=value[field].encode())
    decode_input(topic, raw, plan=PLAN, key=None)


def test_key_mismatch_is_checked_after_validation_and_bounds_a_long_key() -> None:
    invalid = _raw(scan(uom="tons"))
    assert _rejected("scans", invalid, key=b"OTHER").reason_code is ReasonCode.VALIDATION_FAILED
    rejected = _rejected("scans", _raw(scan()), key=b"\xff" + b"k" * 10_000)
    assert rejected.reason_code is ReasonCode.KEY_MISMATCH
    assert len(rejected.errors[0].msg) < 200


def test_a_tombstone_has_no_id_to_disagree_with_its_key() -> None:
    assert decode_input("crm.customers", None, plan=PLAN, key=b"C-7") is TOMBSTONE
    assert decode_input("crm.customers", b" null ", plan=PLAN, key=b"C-7") is TOMBSTONE


@pytest.mark.parametrize(
    "key", [b'"C-7"', b'"\\ud800"', b"bad key\x00\xff", b"C" * 65, b"C-7\n", b""]
)
@pytest.mark.parametrize("value", [None, b"null"])
def test_a_tombstone_whose_key_is_no_customer_id_is_invalid(
    key: bytes, value: bytes | None
) -> None:
    """Its key is the id it deletes: a quoted, binary, empty or oversized key would be
    kept as state (and the sink read a quoted one as another customer than the engine)."""
    rejected = _rejected("crm.customers", value, key=key)
    assert rejected.reason_code is ReasonCode.VALIDATION_FAILED
    assert rejected.errors[0].loc == "key"
    assert len(rejected.errors[0].msg) < 200


def test_replay_lines_are_held_to_the_same_rules() -> None:
    line = decode_replay_line(
        json.dumps({"topic": "scans", "key": "PO-9", "value": scan(attributes={"n": BIG})})
    )
    rejected = _rejected(line.topic, line.value_bytes() or b"", key=line.key_bytes())
    assert rejected.errors[0].type == "unsafe_integer"
    line = decode_replay_line(json.dumps({"topic": "scans", "key": "PO-9", "value": scan()}))
    rejected = _rejected(line.topic, line.value_bytes() or b"", key=line.key_bytes())
    assert rejected.reason_code is ReasonCode.KEY_MISMATCH


# --- clock skew (the gateway) --------------------------------------------------------------

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _scan_at(when: datetime) -> Any:
    return decode_input("scans", _raw(scan(event_time=when.isoformat())), plan=PLAN)


def test_the_gateway_rejects_an_event_time_more_than_the_clock_skew_in_the_future() -> None:
    assert timedelta(hours=24) == DEFAULT_MAX_CLOCK_SKEW
    check_clock_skew(_scan_at(NOW + timedelta(hours=24)), NOW)
    with pytest.raises(RecordRejected) as caught:
        check_clock_skew(_scan_at(NOW + timedelta(hours=24, seconds=1)), NOW)
    assert caught.value.reason_code is ReasonCode.VALIDATION_FAILED
    error = caught.value.errors[0]
    assert (error.loc, error.type) == ("event_time", "timestamp_future")
    assert "24 h 00 min ahead" in error.msg


def test_the_clock_skew_is_configurable() -> None:
    with pytest.raises(RecordRejected):
        check_clock_skew(_scan_at(NOW + timedelta(minutes=6)), NOW, timedelta(minutes=5))
    check_clock_skew(_scan_at(NOW + timedelta(hours=47)), NOW, timedelta(hours=48))


def test_past_times_are_valid_backfills_and_replays() -> None:
    check_clock_skew(_scan_at(datetime(1971, 1, 1, tzinfo=UTC)), NOW)
    crm = decode_input(
        "crm.customers", _raw(customer(updated_at="2099-01-01T00:00:00Z")), plan=PLAN
    )
    check_clock_skew(crm, NOW)  # customers carry no event_time
