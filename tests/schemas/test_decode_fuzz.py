"""Fuzzing decode_input: any bytes give a model or a RecordRejected - never another exception.

An agent that crashes on one record stops its partition; so whatever arrives,
the outcome must be a model (state) or a rejection (dead letter), and the
dead-letter envelope must be buildable from that rejection too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fuzz_budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from samples import SAMPLES_BY_TOPIC, plan_with_qc

from schemas.customers import Customer, Tombstone
from schemas.dead_letter import DeadLetter, DeadLetterSource, ReasonCode
from schemas.plan import SlaPlan
from schemas.replay import ReplayLine
from schemas.topics import INPUT_TOPICS
from schemas.validation import RecordRejected, decode_input, decode_replay_line

NOW = datetime(2027, 1, 1, tzinfo=UTC)
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

topics = st.sampled_from(INPUT_TOPICS)
qc_stages = st.sampled_from(["quality_check", "dyeing", "inspection"])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | st.sampled_from(
        [
            "2026-11-22T14:05:00Z",
            "2026-11-22T14:05:00",
            "2026-11-22T14:05:00+05:30",
            "9999-12-31T23:59:59-12:00",
            "quality_check",
            "rejected",
            "x" * 300,
        ]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=12,
)


_PLANS: dict[str, SlaPlan] = {}


def _plan(qc_stage: str) -> SlaPlan:
    if qc_stage not in _PLANS:
        _PLANS[qc_stage] = plan_with_qc(qc_stage)
    return _PLANS[qc_stage]


def _check(topic: str, raw: bytes | None, qc_stage: str = "quality_check") -> None:
    """The property: a model, or a RecordRejected that makes a valid dead letter."""
    try:
        outcome: object = decode_input(topic, raw, plan=_plan(qc_stage))
    except RecordRejected as rejected:
        outcome = rejected
    if isinstance(outcome, RecordRejected):
        assert isinstance(outcome.reason_code, ReasonCode)
        assert outcome.errors
        source = DeadLetterSource(kind="kafka", topic=topic, partition=0, offset=1)
        letter = DeadLetter.build(raw, source, outcome.errors, outcome.reason_code, NOW)
        assert letter.raw_value() == raw
        assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
    elif isinstance(outcome, Tombstone):
        assert topic == "crm.customers"
    elif not isinstance(outcome, Customer):
        # Valid records survive their own JSON form unchanged.
        assert isinstance(outcome, BaseModel)
        again = decode_input(topic, outcome.model_dump_json().encode(), plan=_plan(qc_stage))
        assert again == outcome


@pytest.mark.slow
@settings(FUZZ, max_examples=examples(3000))
@given(topic=topics, raw=st.binary(max_size=512))
def test_random_bytes(topic: str, raw: bytes) -> None:
    _check(topic, raw)


@pytest.mark.slow
@settings(FUZZ, max_examples=examples(300))
@given(topic=topics, value=json_values)
def test_random_json_values(topic: str, value: Any) -> None:
    _check(topic, json.dumps(value).encode())


@settings(FUZZ, max_examples=examples(400))
@given(
    topic=topics,
    qc_stage=qc_stages,
    data=st.data(),
)
@pytest.mark.slow
def test_mutated_valid_records(topic: str, qc_stage: str, data: st.DataObject) -> None:
    record = SAMPLES_BY_TOPIC[topic]()
    fields = sorted(record)
    for _ in range(data.draw(st.integers(min_value=0, max_value=3), label="mutations")):
        kind = data.draw(st.sampled_from(["drop", "replace", "add"]), label="kind")
        if kind == "drop" and record:
            record.pop(data.draw(st.sampled_from(sorted(record)), label="drop"), None)
        elif kind == "replace":
            record[data.draw(st.sampled_from(fields), label="field")] = data.draw(json_values)
        else:
            record[data.draw(st.text(max_size=12), label="new field")] = data.draw(json_values)
    _check(topic, json.dumps(record).encode(), qc_stage)


@pytest.mark.slow
@settings(FUZZ, max_examples=examples(500))
@given(topic=topics, raw=st.binary(max_size=256))
def test_valid_json_prefix_then_garbage(topic: str, raw: bytes) -> None:
    valid = json.dumps(SAMPLES_BY_TOPIC[topic]()).encode()
    _check(topic, valid[: len(raw) % (len(valid) + 1)] + raw)


@pytest.mark.slow
@settings(FUZZ, max_examples=examples(300))
@given(raw=st.binary(max_size=256) | json_values.map(lambda v: json.dumps(v).encode()))
def test_replay_lines_never_crash(raw: bytes) -> None:
    try:
        outcome: object = decode_replay_line(raw)
    except RecordRejected as rejected:
        outcome = rejected
    if isinstance(outcome, RecordRejected):
        assert outcome.reason_code in (ReasonCode.NOT_JSON, ReasonCode.BAD_REPLAY_LINE)
    else:
        assert isinstance(outcome, ReplayLine)
        _check(outcome.topic, outcome.value_bytes())


def test_edge_cases_found_by_hand() -> None:
    topic_cases = [
        ("scans", b'{"event_id": "\\ud800"}'),
        ("scans", b"\xef\xbb\xbf{}"),
        ("scans", b"[" * 10_000),
        ("scans", b'{"quantity": 1e999}'),
        ("orders", b'{"op": "created", "quantity": 123456789012345678901234567890}'),
        ("crm.customers", b'{"customer_id": "C", "name": "n", "tier": "gold", "x": NaN}'),
        ("unit-status", b'{"event_time": "2026-11-22T14:05:00.' + b"9" * 5000 + b'Z"}'),
    ]
    for topic, raw in topic_cases:
        _check(topic, raw)
