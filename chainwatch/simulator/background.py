"""The streams that run beside the orders: the CRM and the units' status reports.

Both are endless generators in publication order, produced day by day; the
merge stops pulling them once the last order is done.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from itertools import count
from typing import Any

from chainwatch.simulator.records import (
    MS_PER_DAY,
    MS_PER_H,
    MS_PER_MIN,
    SimRecord,
    dumps,
    format_ms,
)
from chainwatch.simulator.world import TIERS, Customer, Incident, UnitSchedule, new_event_id


def _customer_value(customer: Customer, updated_ms: int) -> dict[str, Any]:
    return {
        "customer_id": customer.customer_id,
        "name": customer.name,
        "tier": customer.tier,
        "region": customer.region,
        "account_manager": customer.account_manager,
        "updated_at": format_ms(updated_ms),
    }


def crm_stream(
    seed: int, start_ms: int, customers: tuple[Customer, ...], update: float, tombstone: float
) -> Iterator[SimRecord]:
    """Every customer first (before any order), then a few changes and deletions per day."""
    for customer in customers:
        updated = start_ms - customer.updated_days_ago * MS_PER_DAY
        value = _customer_value(customer, updated)
        yield SimRecord("crm.customers", customer.customer_id, dumps(value), start_ms)
    for day in count():
        rng = random.Random(f"{seed}:crm:{day}")
        day_ms = start_ms + day * MS_PER_DAY
        changes: list[SimRecord] = []
        if rng.random() < update:
            customer = rng.choice(customers)
            value = _customer_value(customer, 0)
            value["tier"] = rng.choice([t for t in TIERS if t != customer.tier])
            value["account_manager"] = f"desk{rng.randint(1, 9)}@example.com"
            value["crm_segment"] = rng.choice(("wholesale", "retail", "online"))  # passed through
            at = day_ms + rng.randint(8 * MS_PER_H, 18 * MS_PER_H) // 1000 * 1000
            value["updated_at"] = format_ms(at)
            changes.append(
                SimRecord("crm.customers", customer.customer_id, dumps(value), at, "crm_update")
            )
        if rng.random() < tombstone:
            customer = rng.choice(customers)
            at = day_ms + rng.randint(8 * MS_PER_H, 18 * MS_PER_H) // 1000 * 1000
            changes.append(
                SimRecord("crm.customers", customer.customer_id, None, at, "crm_tombstone")
            )
        changes.sort(key=lambda r: r.at_ms)
        yield from changes


def _status(incident: Incident, status: str, at: int, event_id: str) -> dict[str, Any]:
    value: dict[str, Any] = {
        "event_id": event_id,
        "unit_id": incident.unit_id,
        "stage": incident.stage,
        "status": status,
        "event_time": format_ms(at),
    }
    if status != "up":
        value["reason"] = incident.reason
        value["expected_up_at"] = format_ms(incident.expected_up_ms)
    return value


def unit_stream(seed: int, start_ms: int, schedule: UnitSchedule) -> Iterator[SimRecord]:
    """Breakdowns, degradations and recoveries of every unit, and rare redundant `up`s."""
    units = sorted(schedule.stage_of)
    for day in count():
        day_ms = start_ms + day * MS_PER_DAY
        todays: list[tuple[int, str, SimRecord]] = []
        for unit in units:
            incident = schedule.incident(unit, day)
            if incident is None:
                rng = random.Random(f"{seed}:heartbeat:{unit}:{day}")
                if rng.random() < 0.03:  # an `up` with no downtime open: changes nothing
                    at = day_ms + rng.randrange(0, MS_PER_DAY // MS_PER_MIN) * MS_PER_MIN
                    value = {
                        "event_id": new_event_id(rng),
                        "unit_id": unit,
                        "stage": schedule.stage_of[unit],
                        "status": "up",
                        "event_time": format_ms(at),
                    }
                    record = SimRecord("unit-status", unit, dumps(value), at, "unit_heartbeat")
                    todays.append((at, unit, record))
                continue
            down_id, up_id = incident.event_ids
            down = _status(incident, incident.status, incident.start_ms, down_id)
            up = _status(incident, "up", incident.end_ms, up_id)
            todays.append(
                (
                    incident.start_ms,
                    unit,
                    SimRecord(
                        "unit-status",
                        unit,
                        dumps(down),
                        incident.start_ms,
                        f"unit_{incident.status}",
                    ),
                )
            )
            todays.append(
                (
                    incident.end_ms,
                    unit,
                    SimRecord("unit-status", unit, dumps(up), incident.end_ms, "unit_recovered"),
                )
            )
        heapq.heapify(todays)
        while todays:
            yield heapq.heappop(todays)[2]
        schedule.forget_before(day - 60)
