"""Invalid records, made from valid ones: what real producers get wrong.

Each kind breaks exactly one rule of CONTRACT.md, so the dead letter it
becomes has one clear reason. A broken copy keeps the original's key and
`event_id`: an invalid record reserves no id (RULES.md), so the valid record
published right after it must still count.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, Final

from schemas.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS
from simulator.records import SimRecord, dumps

Breaker = Callable[[dict[str, Any], random.Random], None]


def _naive_time(value: dict[str, Any], rng: random.Random) -> None:
    field = next(f for f in ("event_time", "placed_at", "updated_at") if f in value)
    text = str(value[field])
    value[field] = text[:-1] if text.endswith("Z") else text[:-6]


def _set(field: str, *choices: Any) -> Breaker:
    def breaker(value: dict[str, Any], rng: random.Random) -> None:
        value[field] = rng.choice(choices)

    return breaker


def _drop(field: str) -> Breaker:
    def breaker(value: dict[str, Any], rng: random.Random) -> None:
        value.pop(field, None)

    return breaker


def _rejected_outside_qc(value: dict[str, Any], rng: random.Random) -> None:
    value["action"] = "rejected"
    if value.get("stage") == "quality_check":
        value["stage"] = "tailoring"


def _due_before_placed(value: dict[str, Any], rng: random.Random) -> None:
    value["op"] = "created"
    value["due_at"], value["placed_at"] = value.get("placed_at"), value.get("due_at")
    if value["due_at"] is None or value["placed_at"] is None:
        value["quantity"] = 0


KINDS: Final[dict[str, dict[str, Breaker]]] = {
    SCANS: {
        "naive_timestamp": _naive_time,
        "unknown_action": _set("action", "paused", "finished", "STARTED"),
        "rejected_outside_qc": _rejected_outside_qc,
        "unknown_uom": _set("uom", "lbs", "yards", "dozen"),
        "missing_unit": _drop("unit_id"),
        "negative_quantity": _set("quantity", -5, -120.5),
        "bad_identifier": _set("order_id", "PO 17/x", ""),
    },
    UNIT_STATUS: {
        "naive_timestamp": _naive_time,
        "unknown_status": _set("status", "offline", "maintenance"),
        "unknown_reason": _set("reason", "alien_invasion", "strike"),
    },
    ORDERS: {
        "naive_timestamp": _naive_time,
        "unknown_op": _set("op", "amended", "deleted"),
        "due_before_placed": _due_before_placed,
    },
    CUSTOMERS: {
        "unknown_tier": _set("tier", "silver", "diamond"),
        "missing_name": _drop("name"),
    },
}
TRUNCATED: Final = "truncated"


def break_record(base: SimRecord, rng: random.Random) -> SimRecord | None:
    """An invalid sibling of `base` (same topic, key, time), or None for a tombstone."""
    if base.value is None:
        return None
    kinds = KINDS[base.topic]
    kind = TRUNCATED if rng.random() < 0.2 else rng.choice(sorted(kinds))
    if kind == TRUNCATED:
        cut = rng.randrange(1, max(2, len(base.value) - 1))
        return SimRecord(
            base.topic, base.key, base.value, base.at_ms, f"invalid:{kind}", False, cut
        )
    value = json.loads(base.value)
    kinds[kind](value, rng)
    return SimRecord(base.topic, base.key, dumps(value), base.at_ms, f"invalid:{kind}", False)
