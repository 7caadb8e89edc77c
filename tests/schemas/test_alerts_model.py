"""The `alerts` record: numbers a 64-bit float holds, nothing else (CONTRACT.md v1.2).

An alert with a non-finite `lateness_s` once passed the model and killed the
notifier's delivery worker when a message was formatted from it; such a record
is an invalid alert record, like any other contract breach.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.alerts import Alert

VALID: dict[str, Any] = {
    "alert_id": "5f0c" * 16,
    "type": "stage_overdue",
    "severity": "critical",
    "status": "resolved",
    "order_id": "PO-1",
    "stage": "dyeing",
    "visit": 1,
    "deadline": "2027-03-01T00:00:00Z",
    "detected_at": "2027-03-01T00:00:00Z",
    "fulfilled_at": "2027-03-01T01:00:00Z",
    "lateness_s": 3600,
    "details": {"quantity": 212.5},
}


def _with(field: str, literal: str) -> str:
    """The valid record as JSON text, one field's value replaced by a raw literal."""
    return json.dumps({**VALID, field: "@@"}).replace('"@@"', literal)


def test_a_valid_alert_keeps_its_numbers() -> None:
    alert = Alert.model_validate_json(json.dumps(VALID))
    assert alert.lateness_s == 3600
    assert json.loads(alert.model_dump_json())["lateness_s"] == 3600


@pytest.mark.parametrize("literal", ["1e309", "-1e309", "NaN", "Infinity", "-Infinity"])
def test_a_non_finite_lateness_is_an_invalid_alert_record(literal: str) -> None:
    with pytest.raises(ValidationError) as info:
        Alert.model_validate_json(_with("lateness_s", literal))
    assert info.value.errors()[0]["loc"] == ("lateness_s",)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_lateness_is_refused_in_python_too(value: float) -> None:
    with pytest.raises(ValidationError):
        Alert.model_validate({**VALID, "lateness_s": value})


@pytest.mark.parametrize(
    "details", ['{"quantity": NaN}', '{"q": [1, Infinity]}', '{"n": 1e400}', '{"big": 1e30000}']
)
def test_a_non_finite_number_in_details_is_an_invalid_alert_record(details: str) -> None:
    with pytest.raises(ValidationError) as info:
        Alert.model_validate_json(_with("details", details))
    assert info.value.errors()[0]["loc"][0] == "details"


def test_a_visit_beyond_two_to_the_53_is_an_invalid_alert_record() -> None:
    with pytest.raises(ValidationError) as info:
        Alert.model_validate_json(_with("visit", str(2**70)))
    assert info.value.errors()[0]["loc"] == ("visit",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alert_id", "x"),
        ("alert_id", "AB" * 32),  # upper-case hex is not what alert_id() writes
        ("alert_id", "ab" * 100_000),
        ("stage", "x" * 100_000),
        ("stage", "Dyeing"),
    ],
)
def test_an_alert_id_or_stage_that_the_engine_cannot_have_written_is_invalid(
    field: str, value: str
) -> None:
    """Records on the alerts topic become keys of the sink's and the notifier's state:
    an unbounded id or stage there is a record no engine wrote."""
    with pytest.raises(ValidationError) as caught:
        Alert.model_validate({**VALID, field: value})
    assert caught.value.errors()[0]["loc"] == (field,)
