"""OrderRecord: per-op required fields, quantity, route, due_at > placed_at (CONTRACT.md 1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from samples import order_created, without

from schemas.orders import MAX_QUANTITY, OrderOp, OrderRecord, check_update_against

PLACED = datetime(2026, 11, 20, 8, tzinfo=UTC)


def _errors(record: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        OrderRecord.model_validate(record)
    return [error["type"] for error in caught.value.errors()]


def test_contract_example_is_valid() -> None:
    order = OrderRecord.model_validate(order_created())
    assert order.op is OrderOp.CREATED
    assert order.quantity == 500
    assert order.route is not None
    assert len(order.route) == 7


def test_created_event_time_defaults_to_placed_at() -> None:
    order = OrderRecord.model_validate(order_created())
    assert order.event_time == order.placed_at == PLACED


def test_created_keeps_an_explicit_event_time() -> None:
    order = OrderRecord.model_validate(order_created(event_time="2026-11-20T09:00:00+01:00"))
    assert order.event_time == PLACED


@pytest.mark.parametrize("missing", ["customer_id", "quantity", "placed_at", "due_at"])
def test_created_requires_its_fields(missing: str) -> None:
    with pytest.raises(ValidationError, match=f"created order needs {missing}"):
        OrderRecord.model_validate(without(order_created(), missing))


@pytest.mark.parametrize("optional", ["product", "route"])
def test_created_optional_fields(optional: str) -> None:
    assert getattr(OrderRecord.model_validate(without(order_created(), optional)), optional) is None


@pytest.mark.parametrize("missing", ["op", "order_id"])
def test_op_and_order_id_always_required(missing: str) -> None:
    assert "missing" in _errors(without(order_created(), missing))


def test_unknown_op_is_rejected() -> None:
    assert _errors(order_created(op="deleted")) == ["enum"]


@pytest.mark.parametrize("op", ["updated", "cancelled"])
def test_updated_and_cancelled_need_event_time(op: str) -> None:
    with pytest.raises(ValidationError, match=f"{op} order needs event_time"):
        OrderRecord.model_validate({"op": op, "order_id": "PO-1"})


def test_updated_may_carry_any_subset() -> None:
    update = OrderRecord.model_validate(
        {"op": "updated", "order_id": "PO-1", "event_time": "2026-11-21T00:00:00Z", "quantity": 7}
    )
    assert update.changes() == {"quantity": 7}
    assert (update.due_at, update.customer_id, update.route) == (None, None, None)


def test_updated_changes_only_updatable_fields() -> None:
    update = OrderRecord.model_validate(
        order_created(op="updated", event_time="2026-11-21T00:00:00Z")
    )
    assert set(update.changes()) == {"due_at", "quantity", "customer_id", "route"}


def test_cancelled_needs_only_id_and_time() -> None:
    cancel = OrderRecord.model_validate(
        {"op": "cancelled", "order_id": "PO-1", "event_time": "2026-11-21T00:00:00+05:30"}
    )
    assert cancel.changes() == {}
    assert cancel.event_time == datetime(2026, 11, 20, 18, 30, tzinfo=UTC)


def test_created_changes_carry_everything_set() -> None:
    assert set(OrderRecord.model_validate(order_created()).changes()) == {
        "customer_id",
        "product",
        "quantity",
        "placed_at",
        "due_at",
        "route",
    }


@pytest.mark.parametrize("quantity", [0, -1, -0.5, MAX_QUANTITY * 10])
def test_quantity_must_be_positive_and_sane(quantity: float) -> None:
    assert _errors(order_created(quantity=quantity))


@pytest.mark.parametrize("quantity", ["500", True, None])
def test_quantity_must_be_a_number(quantity: Any) -> None:
    # None on a created order: missing for the op.
    assert _errors(order_created(quantity=quantity))


def test_quantity_may_be_fractional() -> None:
    assert OrderRecord.model_validate(order_created(quantity=0.25)).quantity == 0.25


def test_quantity_nan_in_json_is_rejected() -> None:
    with pytest.raises(ValidationError):
        OrderRecord.model_validate_json(
            b'{"op":"updated","order_id":"P","event_time":"2026-11-20T08:00:00Z","quantity":NaN}'
        )


@pytest.mark.parametrize("due_at", ["2026-11-20T08:00:00Z", "2026-11-19T08:00:00Z"])
def test_due_at_must_be_after_placed_at(due_at: str) -> None:
    assert _errors(order_created(due_at=due_at)) == ["due_not_after_placed"]


def test_due_at_compared_as_instants_across_offsets() -> None:
    # 13:29+05:30 is 07:59Z, before placed_at 08:00Z.
    assert _errors(order_created(due_at="2026-11-20T13:29:00+05:30")) == ["due_not_after_placed"]
    assert OrderRecord.model_validate(order_created(due_at="2026-11-20T13:31:00+05:30"))


def test_update_with_both_times_is_checked_in_record() -> None:
    record = order_created(
        op="updated", event_time="2026-11-21T00:00:00Z", due_at="2026-11-01T00:00:00Z"
    )
    assert _errors(record) == ["due_not_after_placed"]


@pytest.mark.parametrize(
    "route",
    [[], ["dyeing", "dyeing"], ["Dyeing"], ["dyeing", 3], "dyeing", [f"s{i}" for i in range(65)]],
)
def test_route_shape(route: Any) -> None:
    assert _errors(order_created(route=route))


def test_route_repeat_names_the_stage() -> None:
    with pytest.raises(ValidationError, match="route repeats stage dyeing"):
        OrderRecord.model_validate(order_created(route=["dyeing", "knitting", "dyeing"]))


def test_unknown_fields_are_ignored() -> None:
    order = OrderRecord.model_validate(order_created(priority="high", notes={"a": 1}))
    assert "priority" not in order.model_dump()


def test_record_is_frozen() -> None:
    order = OrderRecord.model_validate(order_created())
    with pytest.raises(ValidationError):
        order.quantity = 1  # type: ignore[misc]


def _update(due_at: str | None) -> OrderRecord:
    record: dict[str, Any] = {
        "op": "updated",
        "order_id": "PO-1",
        "event_time": "2026-11-21T00:00:00Z",
    }
    if due_at is not None:
        record["due_at"] = due_at
    return OrderRecord.model_validate(record)


def test_check_update_against_stored_placed_at() -> None:
    reason = check_update_against(PLACED, _update("2026-11-19T08:00:00Z"))
    assert (
        reason == "due_at 2026-11-19T08:00:00.000Z is not after placed_at 2026-11-20T08:00:00.000Z"
    )
    assert check_update_against(PLACED, _update("2026-11-20T08:00:00Z")) is not None
    assert check_update_against(PLACED, _update("2026-11-20T08:00:00.001Z")) is None
    assert check_update_against(PLACED, _update(None)) is None


def test_check_update_against_ignores_other_ops() -> None:
    assert (
        check_update_against(
            datetime(2030, 1, 1, tzinfo=UTC), OrderRecord.model_validate(order_created())
        )
        is None
    )
