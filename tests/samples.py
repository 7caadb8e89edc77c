"""Valid records of every input topic (CONTRACT.md's samples): the one set of builders.

Functions, not constants, so each test gets its own dict to mutate. `fresh_*` give
unique ids per call, for tests that share a broker (the gateway's); `scan_json` and
`customer_json` give numbered or minimal records as Kafka value bytes (the sink's).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from schemas.plan import SlaPlan, plan_from_mapping
from schemas.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"  # the repo's copy of the spec's


def worked_examples(path: Path) -> Path:
    """The spec's four worked examples as one scenario file at `path` (each example's lines
    in file order, the examples in name order)."""
    path.write_bytes(
        b"".join(
            example.read_bytes().rstrip(b"\n") + b"\n"
            for example in sorted(EXAMPLES.glob("example_*.ndjson"))
        )
    )
    return path


def expected_alerts() -> list[dict[str, Any]]:
    """The alerts the worked examples expect (RULES.md's answers), in file order."""
    return [
        json.loads(line)
        for path in sorted(EXAMPLES.glob("expected_*.ndjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def order_created(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "op": "created",
        "order_id": "PO-1001",
        "customer_id": "C-7",
        "product": "merino-crewneck",
        "quantity": 500,
        "placed_at": "2026-11-20T08:00:00Z",
        "due_at": "2026-12-01T17:00:00Z",
        "route": [
            "yarn_sourcing",
            "dyeing",
            "knitting",
            "tailoring",
            "quality_check",
            "packaging",
            "shipping",
        ],
    }
    record.update(changes)
    return record


def customer(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "customer_id": "C-7",
        "name": "Nordic Knits AB",
        "tier": "platinum",
        "region": "EU",
        "account_manager": "a.berg@example.com",
        "updated_at": "2026-11-01T00:00:00Z",
    }
    record.update(changes)
    return record


def scan(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "2b9f3c1e-7d4a-4c2e-9a51-0f1e2d3c4b5a",
        "order_id": "PO-1001",
        "stage": "dyeing",
        "action": "completed",
        "unit_id": "DYE-01",
        "event_time": "2026-11-22T14:05:00+01:00",
        "quantity": 212.5,
        "uom": "kg",
        "lot_id": "LOT-77",
        "attributes": {"shade": "navy"},
    }
    record.update(changes)
    return record


def unit_status(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "u-5531",
        "unit_id": "KNIT-02",
        "stage": "knitting",
        "status": "down",
        "reason": "machine_breakdown",
        "event_time": "2026-11-23T09:30:00Z",
        "expected_up_at": "2026-11-23T21:00:00Z",
    }
    record.update(changes)
    return record


SAMPLES_BY_TOPIC = {
    ORDERS: order_created,
    CUSTOMERS: customer,
    SCANS: scan,
    UNIT_STATUS: unit_status,
}


def without(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in names}


def as_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def plan_with_qc(qc_stage: str) -> SlaPlan:
    """The shipped plan with another QC stage (added to the route when not on it)."""
    data = yaml.safe_load(
        resources.files("schemas").joinpath("plans", "knitwear.yaml").read_text("utf-8")
    )
    if qc_stage not in data["route"]:
        data["route"].insert(data["route"].index("packaging"), qc_stage)
        data["stage_duration"][qc_stage] = "8h"
    data["qc_stage"] = qc_stage
    if data["route"].index(data["rework_stage"]) >= data["route"].index(qc_stage):
        data["rework_stage"] = data["route"][0]
    return plan_from_mapping(data)


PLAN = plan_with_qc("quality_check")


# --- unique ids per call ---------------------------------------------------------


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fresh_scan(unit_id: str = "DYE-01", **changes: Any) -> dict[str, Any]:
    return scan(**{"event_id": uid("ev"), "order_id": uid("PO"), "unit_id": unit_id, **changes})


def fresh_unit_status(unit_id: str = "DYE-01", **changes: Any) -> dict[str, Any]:
    """A unit's status at its own stage (`DYE-01` is a dyeing unit)."""
    return unit_status(**{"event_id": uid("u"), "unit_id": unit_id, "stage": "dyeing", **changes})


def fresh_order(**changes: Any) -> dict[str, Any]:
    return order_created(**{"order_id": uid("PO"), **changes})


def fresh_customer(**changes: Any) -> dict[str, Any]:
    return customer(**{"customer_id": uid("C"), **changes})


# --- Kafka values ----------------------------------------------------------------

BASE = datetime(2027, 3, 1, tzinfo=UTC)


def scan_json(n: int, **overrides: Any) -> bytes:
    """Scan number `n`: 50 orders, 4 units, a millisecond-hour apart from 2027-03-01."""
    value = without(
        scan(
            event_id=f"ev-{n}",
            order_id=f"PO-{n % 50}",
            action="started",
            unit_id=f"DYE-{n % 4}",
            event_time=(BASE + timedelta(hours=n / 1000)).isoformat(),
            quantity=1.5,
        ),
        "lot_id",
    )
    value.update(overrides)
    return json.dumps(value).encode()


def customer_json(customer_id: str, name: str, tier: str = "gold", **extra: Any) -> bytes:
    """A customer with only the required fields (and `extra`)."""
    return json.dumps({"customer_id": customer_id, "name": name, "tier": tier, **extra}).encode()


def padded_value(
    record: dict[str, Any], key: bytes | None, size: int, *, inner: str = "0"
) -> bytes:
    """`record`'s JSON padded by an unknown field (a list of `inner`, which the worker
    validates and drops) to a Kafka record of exactly `size` bytes with `key`, as
    aiokafka's producer sizes it before it takes it (not as `schemas.kafka_size` does)."""
    head = json.dumps(record)[:-1].encode() + b', "pad": ['
    items = (size - len(head)) // (len(inner) + 1)
    while True:
        value = head + b",".join([inner.encode()] * items) + b"]"
        room = size - DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value + b"}", [])
        if 0 <= room < len(inner) + 1:
            value += b" " * room + b"}"  # JSON whitespace: the value as a file may write it
            assert DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []) == size
            return value
        items += room // (len(inner) + 1) or -1
