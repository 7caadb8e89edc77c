"""Output records are decoded in pydantic-core only, and still reject what no column holds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel
from sink_samples import make_alert, make_state, record

from schemas.alerts import Alert
from schemas.dead_letter import DeadLetter, DeadLetterSource
from schemas.order_state import OrderState
from sinks.clickhouse import wire
from sinks.clickhouse.mapping import RecordInvalid
from sinks.clickhouse.rows_outputs import AlertRows, DeliveryLogRows, OrderStateRows
from sinks.webhooks.records import DeliveryLog


@pytest.mark.parametrize(
    ("shape", "model"),
    [
        (wire.WireAlert, Alert),
        (wire.WireOrderState, OrderState),
        (wire.WireDeadLetter, DeadLetter),
        (wire.WireSource, DeadLetterSource),
        (wire.WireDeliveryLog, DeliveryLog),
    ],
)
def test_wire_shapes_name_only_fields_of_the_contract_models(
    shape: type, model: type[BaseModel]
) -> None:
    assert set(shape.__annotations__) - {"__pydantic_config__"} <= set(model.model_fields)
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required & set(shape.__required_keys__) == required & set(shape.__annotations__)


def _alert(**changes: Any) -> bytes:
    value = json.loads(make_alert(3).model_dump_json())
    value.update(changes)
    return json.dumps(value).encode()


def _state(**changes: Any) -> bytes:
    value = json.loads(make_state(3, 2).model_dump_json())
    value.update(changes)
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    "value",
    [
        b"{not json",
        b"[]",
        None,
        _alert(status="maybe"),
        _alert(deadline="2027-03-01T00:00:00"),  # naive
        _alert(deadline=12),
        _alert(visit=70_000),  # no UInt16 holds it
        _alert(visit=-1),
        _alert(lateness_s="late"),
        _alert(lateness_s=1.5).replace(b"1.5", b"1e309"),
        _alert(lateness_s=float("nan")),  # json.dumps writes NaN
        _alert(lateness_s=float("-inf")),
        json.dumps({"alert_id": "x"}).encode(),
    ],
)
def test_a_malformed_alert_is_invalid(value: bytes | None) -> None:
    with pytest.raises(RecordInvalid):
        AlertRows().rows(record(value))


@pytest.mark.parametrize(
    "value",
    [
        _state(version=-1),
        _state(version=2**64),
        _state(visits=[{"stage": "dyeing", "visit": 2**20, "unit_id": "DYE-01"}]),
        _state(visits=[{"stage": "dyeing", "visit": 1}]),  # no unit
        _state(as_of=None),
        _state(status="lost"),
        _state(quantity=1.5).replace(b"1.5", b"1e309"),
    ],
)
def test_a_malformed_order_state_is_invalid(value: bytes) -> None:
    with pytest.raises(RecordInvalid):
        OrderStateRows().rows(record(value))


def test_the_reason_names_the_field_at_fault_not_only_a_count() -> None:
    """The notifier said `lateness_s: Input should be a finite number` of a record the
    sink logged as `Alert: 1 errors`."""
    raw = _alert(lateness_s=1.5).replace(b"1.5", b"1e309")
    with pytest.raises(RecordInvalid) as info:
        AlertRows().rows(record(raw))
    assert str(info.value) == "Alert: lateness_s: Input should be a finite number"
    with pytest.raises(RecordInvalid) as info:
        AlertRows().rows(record(_alert(status="maybe", visit=-1)))
    assert str(info.value).startswith("Alert: ")
    assert str(info.value).endswith("(and 1 more)")
    assert "maybe" not in str(info.value)  # the field and why, never the value


def test_a_delivery_log_with_a_status_code_no_column_holds_is_invalid() -> None:
    value = {
        "webhook_id": "w", "alert_id": "a", "alert_status": "open", "alert_type": "t",
        "endpoint": "e", "url_host": "h", "outcome": "delivered", "attempts": 1,
        "status_codes": [200], "first_attempt_at": "2027-03-01T00:00:00.000Z",
        "finished_at": "2027-03-01T00:00:01.000Z", "latency_ms": 1000.0,
    }  # fmt: skip
    assert DeliveryLogRows().rows(record(json.dumps(value).encode()))["webhook_deliveries"]
    value["status_codes"] = [200, 70_000]
    with pytest.raises(RecordInvalid):
        DeliveryLogRows().rows(record(json.dumps(value).encode()))


def test_times_keep_their_instant_whatever_the_offset() -> None:
    utc = AlertRows().rows(record(_alert(deadline="2027-03-01T05:30:00.000Z")))["alerts"][0]
    ist = AlertRows().rows(record(_alert(deadline="2027-03-01T11:00:00.000+05:30")))["alerts"][0]
    column = AlertRows.table.columns.index("deadline")
    assert utc[column] == ist[column]


def test_a_silenced_delivery_log_is_a_row_with_its_silence() -> None:
    """The notifier's `silenced` outcome (a silence in force: not sent) is stored as is;
    the sink refused it as no outcome a row holds before silences came."""
    value = {
        "webhook_id": "w", "alert_id": "a", "alert_status": "open", "alert_type": "unit_down",
        "endpoint": "e", "url_host": "h", "outcome": "silenced", "attempts": 0,
        "status_codes": [], "last_error": "silenced: 0123abcd (planned maintenance)",
        "first_attempt_at": "2027-03-01T00:00:00.000Z",
        "finished_at": "2027-03-01T00:00:00.000Z", "latency_ms": 0.0,
    }  # fmt: skip
    DeliveryLog.model_validate(value)  # what the notifier writes
    (row,) = DeliveryLogRows().rows(record(json.dumps(value).encode()))["webhook_deliveries"]
    columns = DeliveryLogRows.table.columns
    assert row[columns.index("outcome")] == "silenced"
    assert row[columns.index("last_error")].startswith("silenced: 0123abcd")
