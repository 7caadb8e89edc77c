"""Uniform scan traffic: every order walks the default route, every record valid.

For benchmarks and the end-to-end slice test, where counts must be predictable;
realistic traffic with anomalies is `chainwatch simulate`.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from schemas.plan import load_plan

DEFAULT_ROUTE = load_plan(None).route
UNITS = {stage: [f"{stage[:4].upper()}-{n:02d}" for n in (1, 2)] for stage in DEFAULT_ROUTE}


def scan_events(seed: int, start: datetime | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Endless (key, value) pairs: each order gets started/completed on every stage."""
    rng = random.Random(seed)
    clock = start or datetime.now(UTC)
    order_no = 0
    while True:
        order_no += 1
        order_id = f"PO-{seed}-{order_no:06d}"
        for stage in DEFAULT_ROUTE:
            unit = rng.choice(UNITS[stage])
            for action in ("started", "completed"):
                clock += timedelta(seconds=rng.randint(1, 30))
                value = {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "order_id": order_id,
                    "stage": stage,
                    "action": action,
                    "unit_id": unit,
                    "event_time": clock.isoformat(timespec="milliseconds"),
                    "quantity": 500,
                    "uom": "pcs",
                }
                yield order_id.encode(), json.dumps(value).encode()
