"""UnitStatus: required fields, status and reason enums (CONTRACT.md 4)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from samples import unit_status, without

from schemas.unit_status import DowntimeReason, UnitState, UnitStatus


def test_contract_example_is_valid() -> None:
    record = UnitStatus.model_validate(unit_status())
    assert record.status is UnitState.DOWN
    assert record.reason is DowntimeReason.MACHINE_BREAKDOWN


@pytest.mark.parametrize("missing", ["event_id", "unit_id", "status", "event_time"])
def test_required_fields(missing: str) -> None:
    with pytest.raises(ValidationError):
        UnitStatus.model_validate(without(unit_status(), missing))


def test_optional_fields() -> None:
    record = UnitStatus.model_validate(
        without(unit_status(status="up"), "stage", "reason", "expected_up_at")
    )
    assert (record.stage, record.reason, record.expected_up_at) == (None, None, None)


@pytest.mark.parametrize("status", ["up", "down", "degraded"])
def test_statuses(status: str) -> None:
    assert UnitStatus.model_validate(unit_status(status=status)).status == status


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "offline"),
        ("reason", "strike"),
        ("stage", "Knitting"),
        ("expected_up_at", "2026-11-23T21:00:00"),
        ("unit_id", "KNIT 02"),
    ],
)
def test_invalid_values(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        UnitStatus.model_validate(unit_status(**{field: value}))


@pytest.mark.parametrize("reason", [reason.value for reason in DowntimeReason])
def test_every_reason(reason: str) -> None:
    assert UnitStatus.model_validate(unit_status(reason=reason)).reason == reason


def test_unknown_fields_are_ignored() -> None:
    assert "ticket" not in UnitStatus.model_validate(unit_status(ticket="T-1")).model_dump()
