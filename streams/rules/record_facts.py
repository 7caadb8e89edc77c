"""Validated contract records -> the facts the rules fold (`streams.rules.facts`).

One conversion for both folds: the streaming engine's and the oracle's
(`streams.rules.oracle`). A fact keeps the fields the rules read, enums by value.
"""

from __future__ import annotations

from schemas.orders import OrderRecord
from schemas.scans import ScanEvent
from schemas.unit_status import UnitStatus
from streams.rules.facts import DowntimeRecord, OrderRecordFact, ScanFact


def scan_fact(scan: ScanEvent) -> ScanFact:
    # `_value_`, not `.value`: the enum property is Python code (~0.2 µs), on every scan
    uom = scan.uom
    return ScanFact(
        scan.event_id,
        scan.stage,
        scan.action._value_,
        scan.unit_id,
        scan.event_time,
        scan.quantity,
        None if uom is None else uom._value_,
    )


def order_record_fact(record: OrderRecord, offset: int) -> OrderRecordFact:
    event_time = record.event_time
    assert event_time is not None  # the model defaults it to placed_at
    return OrderRecordFact(
        record.op._value_,
        event_time,
        offset,
        record.customer_id,
        record.product,
        record.quantity,
        record.placed_at,
        record.due_at,
        None if record.route is None else tuple(record.route),
    )


def unit_status_fact(status: UnitStatus) -> DowntimeRecord:
    return DowntimeRecord(
        status.event_id,
        status.unit_id,
        status.stage,
        status.status.value,
        None if status.reason is None else status.reason.value,
        status.event_time,
    )
