"""Valid records of every input, with unique ids per call so tests never collide."""

from __future__ import annotations

import uuid
from typing import Any


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def scan(unit_id: str = "DYE-01", **over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": uid("ev"),
        "order_id": uid("PO"),
        "stage": "dyeing",
        "action": "completed",
        "unit_id": unit_id,
        "event_time": "2026-11-22T14:05:00+01:00",
        "quantity": 212.5,
        "uom": "kg",
    }
    record.update(over)
    return record


def unit_status(unit_id: str = "DYE-01", **over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": uid("u"),
        "unit_id": unit_id,
        "stage": "dyeing",
        "status": "down",
        "reason": "machine_breakdown",
        "event_time": "2026-11-23T09:30:00Z",
    }
    record.update(over)
    return record


def order(**over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "op": "created",
        "order_id": uid("PO"),
        "customer_id": "C-7",
        "product": "merino-crewneck",
        "quantity": 500,
        "placed_at": "2026-11-20T08:00:00Z",
        "due_at": "2026-12-01T17:00:00Z",
    }
    record.update(over)
    return record


def customer(**over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "customer_id": uid("C"),
        "name": "Nordic Knits AB",
        "tier": "platinum",
        "region": "EU",
        "updated_at": "2026-11-01T00:00:00Z",
    }
    record.update(over)
    return record
