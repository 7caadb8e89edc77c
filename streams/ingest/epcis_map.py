"""EPCIS events -> scan events, a pure function of the event and the mapping.

The result is a plain scan *object* (not a `ScanEvent`): the gateway
serialises it and runs it through `decode_input("scans", ...)` like any other
scan, so an EPCIS-born scan is judged by exactly the same rules. Whatever the
mapping cannot resolve is an `Unmappable` with every reason at once, because
the sender fixes its document (or the operator the mapping) in one go.
"""

from __future__ import annotations

from typing import Any

from schemas.dead_letter import ErrorDetail
from schemas.epcis import MAPPED_EVENT_TYPES, EpcisMapping, cbv_name


class Unmappable(Exception):
    """An EPCIS event no rule turns into a scan (`unmappable_epcis` dead letter)."""

    def __init__(self, errors: list[ErrorDetail]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.loc}: {e.msg}" for e in errors))


def _err(loc: str, msg: str, kind: str) -> ErrorDetail:
    return ErrorDetail(loc=loc, msg=msg, type=kind)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def map_event(event: Any, mapping: EpcisMapping) -> dict[str, Any]:
    """The scan object for one `eventList` entry, or `Unmappable` with the reasons."""
    if not isinstance(event, dict):
        raise Unmappable([_err("", "an EPCIS event must be a JSON object", "epcis_not_object")])
    event_type = _text(event.get("type"))
    if event_type not in MAPPED_EVENT_TYPES:
        raise Unmappable(
            [
                _err(
                    "type",
                    f"event type {event_type!r} is not mapped "
                    "(only ObjectEvent and TransformationEvent become scans)",
                    "epcis_event_type",
                )
            ]
        )
    assert event_type is not None
    errors: list[ErrorDetail] = []

    read_point = event.get("readPoint")
    read_point_id = _text(read_point.get("id")) if isinstance(read_point, dict) else None
    target = mapping.read_points.get(read_point_id) if read_point_id else None
    if read_point_id is None:
        errors.append(_err("readPoint.id", "the event has no readPoint.id", "epcis_no_read_point"))
    elif target is None:
        errors.append(
            _err(
                "readPoint.id",
                f"read point {read_point_id!r} is not in the mapping",
                "epcis_unknown_read_point",
            )
        )

    biz_step_raw = _text(event.get("bizStep"))
    disposition_raw = _text(event.get("disposition"))
    biz_step = cbv_name("bizStep", biz_step_raw) if biz_step_raw else None
    disposition = cbv_name("disposition", disposition_raw) if disposition_raw else None
    action = mapping.action_for(event_type, biz_step, disposition)
    if action is None:
        errors.append(
            _err(
                "bizStep",
                f"no action rule matches {event_type} bizStep={biz_step!r} "
                f"disposition={disposition!r}",
                "epcis_no_action_rule",
            )
        )

    order_id = _order_id(event, mapping)
    if order_id is None:
        errors.append(
            _err(
                "bizTransactionList",
                f"no {mapping.order_id.biz_transaction_type!r} business transaction matches "
                f"{mapping.order_id.pattern.pattern!r}",
                "epcis_no_order_id",
            )
        )
    if errors:
        raise Unmappable(errors)
    assert target is not None
    assert action is not None

    scan: dict[str, Any] = {
        "event_id": event.get(mapping.event_id),
        "order_id": order_id,
        "stage": target.stage,
        "action": action.value,
        "unit_id": target.unit_id,
        "event_time": event.get(mapping.event_time),
    }
    scan.update(_quantity(event, event_type, mapping))
    return scan


def _order_id(event: dict[str, Any], mapping: EpcisMapping) -> str | None:
    transactions = event.get("bizTransactionList")
    if not isinstance(transactions, list):
        return None
    rule = mapping.order_id
    for entry in transactions:
        if not isinstance(entry, dict):
            continue
        kind = _text(entry.get("type"))
        value = _text(entry.get("bizTransaction"))
        if kind is None or value is None:
            continue
        if cbv_name("bizTransactionType", kind) != rule.biz_transaction_type:
            continue
        match = rule.pattern.fullmatch(value)
        if match is not None and match.group("order_id"):
            return match.group("order_id")
    return None


def _quantity(event: dict[str, Any], event_type: str, mapping: EpcisMapping) -> dict[str, Any]:
    """ObjectEvent: `quantityList[0]`; TransformationEvent: `outputQuantityList[0]`."""
    if mapping.quantity is None:
        return {}
    field = "quantityList" if event_type == "ObjectEvent" else "outputQuantityList"
    entries = event.get(field)
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return {}
    first = entries[0]
    uom_code = _text(first.get("uom"))
    uom = mapping.quantity.uom.get(uom_code) if uom_code else None
    if uom is None or "quantity" not in first:
        return {}
    return {"quantity": first["quantity"], "uom": uom.value}
