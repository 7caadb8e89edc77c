"""The streams that run beside the orders: the CRM and the units' status reports.

Both are produced one day at a time (a list in publication order per day):
the merge asks for a day when the simulated clock reaches it, and stops
asking once the last order is done, so a quiet day costs nothing and can
never stall the run.
"""

from __future__ import annotations

import random
from typing import Any

from schemas.topics import CUSTOMERS, UNIT_STATUS
from simulator.records import (
    MS_PER_DAY,
    MS_PER_H,
    MS_PER_MIN,
    SimRecord,
    dumps,
    format_ms,
)
from simulator.world import TIERS, Customer, Incident, UnitSchedule, new_event_id


def _customer_value(customer: Customer, updated_ms: int) -> dict[str, Any]:
    return {
        "customer_id": customer.customer_id,
        "name": customer.name,
        "tier": customer.tier,
        "region": customer.region,
        "account_manager": customer.account_manager,
        "updated_at": format_ms(updated_ms),
    }


def initial_customers(start_ms: int, customers: tuple[Customer, ...]) -> list[SimRecord]:
    """Every customer, published at the start: before any order refers to it."""
    out = []
    for customer in customers:
        updated = start_ms - customer.updated_days_ago * MS_PER_DAY
        value = _customer_value(customer, updated)
        out.append(SimRecord(CUSTOMERS, customer.customer_id, dumps(value), start_ms))
    return out


def _office_hours(rng: random.Random, day_ms: int) -> int:
    return day_ms + rng.randint(8 * MS_PER_H, 18 * MS_PER_H) // 1000 * 1000


def crm_day(
    seed: int,
    start_ms: int,
    day: int,
    customers: tuple[Customer, ...],
    update: float,
    tombstone: float,
) -> list[SimRecord]:
    """A day of CRM changes: maybe a tier change (with an extra field), maybe a deletion."""
    rng = random.Random(f"{seed}:crm:{day}")
    day_ms = start_ms + day * MS_PER_DAY
    changes: list[SimRecord] = []
    if rng.random() < update:
        customer = rng.choice(customers)
        at = _office_hours(rng, day_ms)
        value = _customer_value(customer, at)
        value["tier"] = rng.choice([t for t in TIERS if t != customer.tier])
        value["account_manager"] = f"desk{rng.randint(1, 9)}@example.com"
        value["crm_segment"] = rng.choice(("wholesale", "retail", "online"))  # passed through
        changes.append(SimRecord(CUSTOMERS, customer.customer_id, dumps(value), at, "crm_update"))
    if rng.random() < tombstone:
        customer = rng.choice(customers)
        at = _office_hours(rng, day_ms)
        changes.append(SimRecord(CUSTOMERS, customer.customer_id, None, at, "crm_tombstone"))
    changes.sort(key=lambda r: r.at_ms)
    return changes


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


def unit_day(seed: int, start_ms: int, day: int, schedule: UnitSchedule) -> list[SimRecord]:
    """A day of breakdowns, degradations and recoveries of every unit, and rare redundant `up`s."""
    day_ms = start_ms + day * MS_PER_DAY
    todays: list[tuple[int, str, SimRecord]] = []
    for unit in sorted(schedule.stage_of):
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
                todays.append(
                    (at, unit, SimRecord(UNIT_STATUS, unit, dumps(value), at, "unit_heartbeat"))
                )
            continue
        down_id, up_id = incident.event_ids
        down = dumps(_status(incident, incident.status, incident.start_ms, down_id))
        up = dumps(_status(incident, "up", incident.end_ms, up_id))
        label = f"unit_{incident.status}"
        todays.append(
            (
                incident.start_ms,
                unit,
                SimRecord(UNIT_STATUS, unit, down, incident.start_ms, label),
            )
        )
        todays.append(
            (
                incident.end_ms,
                unit,
                SimRecord(UNIT_STATUS, unit, up, incident.end_ms, "unit_recovered"),
            )
        )
    todays.sort(key=lambda item: (item[0], item[1]))
    schedule.forget_before(day - 60)
    return [record for _, _, record in todays]
