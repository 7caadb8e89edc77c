"""EPCIS events -> scan events, a pure function of the event and the mapping.

The result is a plain scan *object* (not a `ScanEvent`): the gateway
serialises it and runs it through `decode_input("scans", ...)` like any other
scan, so an EPCIS-born scan is judged by exactly the same rules. Whatever the
mapping cannot resolve is an `Unmappable` with every reason at once, because
the sender fixes its document (or the operator the mapping) in one go.
"""

from __future__ import annotations

import re
from typing import Any, Final

from schemas.dead_letter import ErrorDetail
from schemas.epcis import MAPPED_EVENT_TYPES, EpcisMapping, cbv_name
from schemas.epcis_hash import contract_event_id, event_hash
from schemas.text import capped

QUANTITY_FIELD: Final = {
    "ObjectEvent": "quantityList",
    "TransformationEvent": "outputQuantityList",
    "AggregationEvent": "childQuantityList",
    "AssociationEvent": "childQuantityList",
    "TransactionEvent": "quantityList",
}
"""Where a scan's quantity comes from, per event type (the first entry of the list)."""

EPCIS_ID_ATTRIBUTE: Final = "epcis_event_id"
"""Scan attribute holding the EPCIS id when `event_id` is not that id verbatim."""

_OFFSET: Final = re.compile(r"^[+-](?:0\d|1[0-4]):[0-5]\d$")
_HAS_ZONE: Final = re.compile(r"(?:[Zz]|[+-]\d\d:?\d\d)$")


class Unmappable(Exception):
    """An EPCIS event no rule turns into a scan (`unmappable_epcis` dead letter).
    `unit_id` and `stage` are what its read point claims, when the mapping knows it: a
    unit token may not post, not even as a dead letter, an event of another unit."""

    def __init__(
        self, errors: list[ErrorDetail], unit_id: str | None = None, stage: str | None = None
    ) -> None:
        self.errors = errors
        self.unit_id, self.stage = unit_id, stage
        super().__init__("; ".join(f"{e.loc}: {e.msg}" for e in errors))


def read_point_claim(event: Any, mapping: EpcisMapping) -> tuple[str | None, str | None]:
    """The unit and stage an event's read point names in the mapping, else (None, None)."""
    read_point = event.get("readPoint") if isinstance(event, dict) else None
    read_point_id = _text(read_point.get("id")) if isinstance(read_point, dict) else None
    target = mapping.read_points.get(read_point_id) if read_point_id else None
    return (target.unit_id, target.stage) if target is not None else (None, None)


def _err(loc: str, msg: str, kind: str) -> ErrorDetail:
    return ErrorDetail(loc=loc, msg=msg, type=kind)


def _shown(value: str | None) -> str:
    """An event's value as its reason repeats it, capped (`schemas.text.capped`): a read
    point id of a megabyte was repeated whole in the 422 answer and the dead letter."""
    return "None" if value is None else capped(value, quoted=True)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def map_event(event: Any, mapping: EpcisMapping, context: Any = None) -> dict[str, Any]:
    """The scan object for one `eventList` entry, or `Unmappable` with the reasons.

    `context` is the document's `@context` (namespaces of extension fields, used
    by the CBV 2.0 event hash of an event without `eventID`).
    """
    if not isinstance(event, dict):
        raise Unmappable([_err("", "an EPCIS event must be a JSON object", "epcis_not_object")])
    event_type = _text(event.get("type"))
    if event_type not in MAPPED_EVENT_TYPES:
        raise Unmappable(
            [
                _err(
                    "type",
                    f"event type {_shown(event_type)} is not mapped "
                    f"(one of {', '.join(sorted(MAPPED_EVENT_TYPES))} becomes a scan)",
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
                f"read point {_shown(read_point_id)} is not in the mapping",
                "epcis_unknown_read_point",
            )
        )

    biz_step_raw = _text(event.get("bizStep"))
    disposition_raw = _text(event.get("disposition"))
    biz_step = cbv_name("bizStep", biz_step_raw) if biz_step_raw else None
    disposition = cbv_name("disposition", disposition_raw) if disposition_raw else None
    epcis_action = _text(event.get("action"))
    action = mapping.action_for(event_type, biz_step, disposition, epcis_action)
    if action is None:
        errors.append(
            _err(
                "bizStep",
                f"no action rule matches {event_type} bizStep={_shown(biz_step)} "
                f"disposition={_shown(disposition)} action={_shown(epcis_action)}",
                "epcis_no_action_rule",
            )
        )

    order_id = _order_id(event, mapping)
    if order_id is None:
        errors.append(
            _err(
                "bizTransactionList",
                f"no {mapping.order_id.biz_transaction_type!r} business transaction matches "
                f"{mapping.order_id.pattern!r}",
                "epcis_no_order_id",
            )
        )
    if errors:
        raise Unmappable(errors, *read_point_claim(event, mapping))
    assert target is not None
    assert action is not None

    scan: dict[str, Any] = {
        "event_id": None,
        "order_id": order_id,
        "stage": target.stage,
        "action": action.value,
        "unit_id": target.unit_id,
        "event_time": _event_time(event, mapping),
    }
    scan.update(_event_id(event, mapping, context))
    scan.update(_quantity(event, event_type, mapping))
    return scan


def _event_id(event: dict[str, Any], mapping: EpcisMapping, context: Any) -> dict[str, Any]:
    """`event_id` (+ the EPCIS id in `attributes` when the two differ), deterministic.

    The id field as sent when it fits the contract; a non-string id is left to
    the scan validation (a reason, not a guess); otherwise see `contract_event_id`.
    An event without the field gets its CBV 2.0 event hash.
    """
    raw = event.get(mapping.event_id)
    if raw is None or raw == "":
        raw = event_hash(event, context)
    if not isinstance(raw, str):
        return {"event_id": raw}
    event_id = contract_event_id(raw)
    if event_id == raw:
        return {"event_id": event_id}
    return {"event_id": event_id, "attributes": {EPCIS_ID_ATTRIBUTE: raw[:256]}}


def _event_time(event: dict[str, Any], mapping: EpcisMapping) -> Any:
    """The time as sent; a time without an offset takes `eventTimeZoneOffset` (EPCIS 2.0
    events carry the local offset there), which the contract needs."""
    value = event.get(mapping.event_time)
    offset = event.get("eventTimeZoneOffset")
    if (
        isinstance(value, str)
        and "T" in value
        and not _HAS_ZONE.search(value)
        and isinstance(offset, str)
        and _OFFSET.fullmatch(offset)
    ):
        return value + offset
    return value


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
        order_id = rule.order_id_in(value)
        if order_id is not None:
            return order_id
    return None


def _quantity(event: dict[str, Any], event_type: str, mapping: EpcisMapping) -> dict[str, Any]:
    """The first entry of the event type's quantity list (`QUANTITY_FIELD`)."""
    if mapping.quantity is None:
        return {}
    field = QUANTITY_FIELD[event_type]
    entries = event.get(field)
    if entries is None:
        return {}
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        # an object in its place gave a scan without its quantity, silently: a quantity
        # loss would then go unseen
        raise Unmappable(
            [_err(field, f"{field} must be an array of QuantityElement objects", "epcis_quantity")],
            *read_point_claim(event, mapping),
        )
    if not entries:
        return {}
    first = entries[0]
    uom_code = _text(first.get("uom"))
    uom = mapping.quantity.uom.get(uom_code) if uom_code else None
    if uom is None or "quantity" not in first:
        return {}
    return {"quantity": first["quantity"], "uom": uom.value}
