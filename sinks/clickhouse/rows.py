"""Pure mapping from Kafka records to ClickHouse rows, one writer per table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import TypeAdapter, ValidationError

from schemas.common import UtcDatetime

_utc: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


class ScanRows:
    """Valid scans of the `scans` topic; invalid ones are the engine's dead letters."""

    table: str = "scans"
    columns: Sequence[str] = (
        "event_id",
        "order_id",
        "stage",
        "action",
        "unit_id",
        "event_time",
        "quantity",
        "uom",
        "lot_id",
        "attributes",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
    )

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> list[Sequence[Any]]:
        try:
            value = json.loads(record.value or b"")
            event_time = _utc.validate_python(value["event_time"])
            return [
                (
                    str(value["event_id"]),
                    str(value["order_id"]),
                    str(value["stage"]),
                    str(value["action"]),
                    str(value["unit_id"]),
                    event_time,
                    value.get("quantity"),
                    value.get("uom"),
                    value.get("lot_id"),
                    json.dumps(value.get("attributes") or {}, sort_keys=True),
                    record.topic,
                    record.partition,
                    record.offset,
                )
            ]
        except (ValueError, KeyError, TypeError, ValidationError):
            return []
