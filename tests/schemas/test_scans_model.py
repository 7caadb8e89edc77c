"""ScanEvent: required fields, enums, bounds, QC-only rejects (CONTRACT.md 3)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from samples import scan, without

from schemas.scans import (
    MAX_ATTRIBUTE_KEY,
    MAX_ATTRIBUTE_TEXT,
    MAX_ATTRIBUTES,
    ScanAction,
    ScanEvent,
    Uom,
)


def _types(record: dict[str, Any], **context: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        ScanEvent.model_validate(record, context=context or None)
    return [error["type"] for error in caught.value.errors()]


def test_contract_example_is_valid() -> None:
    event = ScanEvent.model_validate(scan())
    assert event.action is ScanAction.COMPLETED
    assert event.uom is Uom.KG
    assert event.event_time == datetime(2026, 11, 22, 13, 5, tzinfo=UTC)
    assert event.attributes == {"shade": "navy"}


@pytest.mark.parametrize(
    "missing", ["event_id", "order_id", "stage", "action", "unit_id", "event_time"]
)
def test_required_fields(missing: str) -> None:
    assert _types(without(scan(), missing)) == ["missing"]


def test_optional_fields() -> None:
    event = ScanEvent.model_validate(without(scan(), "quantity", "uom", "lot_id", "attributes"))
    assert (event.quantity, event.uom, event.lot_id, event.attributes) == (None, None, None, None)


@pytest.mark.parametrize(("field", "value"), [("action", "paused"), ("uom", "lb"), ("uom", "KG")])
def test_enums(field: str, value: str) -> None:
    assert _types(scan(**{field: value})) == ["enum"]


def test_quantity_zero_is_allowed() -> None:
    assert ScanEvent.model_validate(scan(quantity=0)).quantity == 0


@pytest.mark.parametrize("quantity", [-0.001, -1, 1e12, "212.5", True])
def test_quantity_bounds_and_type(quantity: Any) -> None:
    assert _types(scan(quantity=quantity))


@pytest.mark.parametrize("field", ["event_id", "order_id", "unit_id"])
@pytest.mark.parametrize("value", ["", "x" * 65, "has space"])
def test_identifiers(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ScanEvent.model_validate(scan(**{field: value}))
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_offsetless_event_time_is_rejected() -> None:
    assert _types(scan(event_time="2027-03-15T20:00:00")) == ["timestamp_no_offset"]


def test_lot_id() -> None:
    assert ScanEvent.model_validate(scan(lot_id="LOT/2026/11")).lot_id == "LOT/2026/11"
    assert _types(scan(lot_id="x" * 65))
    assert _types(scan(lot_id="lot 7"))


def test_attribute_value_types() -> None:
    attributes = {"shade": "navy", "gauge": 12, "weight": 0.5, "ok": True, "note": None}
    assert ScanEvent.model_validate(scan(attributes=attributes)).attributes == attributes


def test_attribute_bools_stay_bools_in_json() -> None:
    event = ScanEvent.model_validate_json(
        b'{"event_id":"e","order_id":"o","stage":"dyeing","action":"started","unit_id":"u",'
        b'"event_time":"2026-11-22T14:05:00Z","attributes":{"a":true,"b":1,"c":1.0}}'
    )
    assert event.attributes is not None
    assert [type(v) for v in event.attributes.values()] == [bool, int, float]


@pytest.mark.parametrize(
    "attributes",
    [
        {f"k{i}": i for i in range(MAX_ATTRIBUTES + 1)},
        {"k" * (MAX_ATTRIBUTE_KEY + 1): 1},
        {"": 1},
        {"shade": "x" * (MAX_ATTRIBUTE_TEXT + 1)},
        {"nested": {"a": 1}},
        {"list": [1, 2]},
        ["shade", "navy"],
    ],
)
def test_attribute_bounds(attributes: Any) -> None:
    assert _types(scan(attributes=attributes))


def test_attribute_bounds_are_inclusive() -> None:
    attributes = {f"k{i:0{MAX_ATTRIBUTE_KEY - 1}d}": "x" * MAX_ATTRIBUTE_TEXT for i in range(32)}
    assert ScanEvent.model_validate(scan(attributes=attributes)).attributes == attributes


def test_rejected_is_valid_at_default_qc_stage() -> None:
    event = ScanEvent.model_validate(scan(stage="quality_check", action="rejected"))
    assert event.action is ScanAction.REJECTED


def test_rejected_outside_qc_is_invalid() -> None:
    with pytest.raises(ValidationError) as caught:
        ScanEvent.model_validate(scan(stage="dyeing", action="rejected"))
    (error,) = caught.value.errors()
    assert error["loc"] == ("action",)
    assert error["type"] == "rejected_outside_qc"
    assert error["msg"] == "rejected is only valid at the QC stage (quality_check)"


def test_rejected_uses_qc_stage_from_context() -> None:
    record = scan(stage="inspection", action="rejected")
    event = ScanEvent.model_validate(record, context={"qc_stage": "inspection"})
    assert event.stage == "inspection"
    with pytest.raises(ValidationError, match=r"only valid at the QC stage \(inspection\)"):
        ScanEvent.model_validate(
            scan(stage="quality_check", action="rejected"), context={"qc_stage": "inspection"}
        )


def test_context_without_qc_stage_uses_default() -> None:
    assert _types(scan(stage="dyeing", action="rejected"), other="x") == ["rejected_outside_qc"]
    assert ScanEvent.model_validate(
        scan(stage="quality_check", action="rejected"), context={"other": "x"}
    )


def test_rejected_with_invalid_stage_reports_only_the_stage() -> None:
    assert _types(scan(stage="Bad Stage", action="rejected")) == ["string_pattern_mismatch"]


@pytest.mark.parametrize("action", ["started", "completed"])
def test_other_actions_valid_anywhere(action: str) -> None:
    assert ScanEvent.model_validate(scan(stage="quality_check", action=action))


def test_unknown_fields_are_ignored() -> None:
    event = ScanEvent.model_validate(scan(operator="j.doe", temperature=80))
    assert "operator" not in event.model_dump()


@pytest.mark.parametrize("number", [float("inf"), float("nan")])
def test_attribute_numbers_must_be_finite(number: float) -> None:
    assert _types(scan(attributes={"w": number})) == ["attribute_not_finite"]
