"""The oracle's customer join under closed-order retention (CONTRACT v1.2 "Bounded state").

A closed order leaves a streaming engine's state `retention` after it closed and
its alerts are final then: a CRM change that comes later in the file, when the
clock has passed that instant, must not reach them. The oracle (what the fleet
test compares the engine with) has to say the same.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rules_builders import PLAN

from streams.rules.oracle import run_scenario

EXAMPLE_3 = Path(__file__).resolve().parents[2] / "examples" / "example_3_unit_down.ndjson"
"""PO-3301 (customer C-43, platinum) completes on 2027-03-14 with two alerts."""
UNTIL = datetime(2027, 6, 1, tzinfo=UTC)


def _line(topic: str, key: str, value: dict[str, object]) -> bytes:
    return json.dumps({"topic": topic, "key": key, "value": value}).encode()


CLOCK_JUMP = _line("orders", "PO-LATER", {
    "op": "created", "order_id": "PO-LATER", "customer_id": "C-44", "product": "alpaca-beanie",
    "quantity": 10, "placed_at": "2027-05-01T00:00:00Z",
    "due_at": "2027-05-20T00:00:00Z"})  # fmt: skip
"""A record dated 2027-05-01: 48 days after PO-3301 closed."""
TIER_CHANGE = _line("crm.customers", "C-43", {
    "customer_id": "C-43", "name": "Aurora Fibres Oy", "tier": "gold", "region": "EU",
    "updated_at": "2027-04-30T09:00:00Z"})  # fmt: skip


def _tiers(lines: list[bytes], retention: timedelta | None) -> set[str]:
    result = run_scenario(lines, PLAN, UNTIL, closed_order_retention=retention)
    tiers = {str(a.customer.tier) for a in result.alerts if a.order_id == "PO-3301" and a.customer}
    assert tiers, "PO-3301 has alerts"
    return tiers


def test_a_crm_change_after_the_eviction_instant_does_not_reach_a_closed_order() -> None:
    lines = [*EXAMPLE_3.read_bytes().splitlines(), CLOCK_JUMP, TIER_CHANGE]
    assert _tiers(lines, timedelta(days=30)) == {"platinum"}


def test_a_crm_change_before_the_eviction_instant_reaches_it() -> None:
    lines = [*EXAMPLE_3.read_bytes().splitlines(), TIER_CHANGE, CLOCK_JUMP]
    assert _tiers(lines, timedelta(days=30)) == {"gold"}
    longer = [*EXAMPLE_3.read_bytes().splitlines(), CLOCK_JUMP, TIER_CHANGE]
    assert _tiers(longer, timedelta(days=60)) == {"gold"}


def test_without_retention_the_last_crm_fact_wins() -> None:
    lines = [*EXAMPLE_3.read_bytes().splitlines(), CLOCK_JUMP, TIER_CHANGE]
    assert _tiers(lines, None) == {"gold"}


def _clock_jump(order_id: str) -> bytes:
    return CLOCK_JUMP.replace(b"PO-LATER", order_id.encode())


def test_with_partitions_the_eviction_clock_is_the_order_partitions() -> None:
    """Before: the file's clock only. An engine's partition clock moves with that
    partition's own records, so a later order on another partition (PO-LATER: 6 of 8,
    PO-3301: 4) does not evict PO-3301 there, and the tier change still reaches it; the
    fleet bench's reference disagreed with 1, 2 and 4 workers alike on such an order."""
    example = EXAMPLE_3.read_bytes().splitlines()
    elsewhere = [*example, _clock_jump("PO-LATER"), TIER_CHANGE]
    same_partition = [*example, _clock_jump("PO-LATER-5"), TIER_CHANGE]

    def tiers(lines: list[bytes], partitions: int | None) -> set[str]:
        result = run_scenario(
            lines, PLAN, UNTIL, closed_order_retention=timedelta(days=30), partitions=partitions
        )
        return {
            str(a.customer.tier) for a in result.alerts if a.order_id == "PO-3301" and a.customer
        }

    assert tiers(elsewhere, 8) == {"gold"}
    assert tiers(same_partition, 8) == {"platinum"}
    assert tiers(elsewhere, None) == {"platinum"}  # one clock: the file's


def test_a_unit_status_moves_the_clock_of_its_partition_number_too() -> None:
    """The engine keeps one clock per partition number for every input topic it reads
    (`EngineClock.observe` from the unit agent as from the order agent), so a unit
    status on unit-status partition 4 moves the clock that evicts PO-3301 (orders
    partition 4 of 8): the tier change after it does not reach the order. Before: only
    scans and order records moved the oracle's partition clock, and it said gold."""
    status = _line("unit-status", "U-11", {
        "event_id": "later-u", "unit_id": "U-11", "stage": "knitting", "status": "up",
        "reason": "machine_breakdown", "event_time": "2027-05-01T00:00:00Z"})  # fmt: skip
    lines = [*EXAMPLE_3.read_bytes().splitlines(), status, TIER_CHANGE]
    result = run_scenario(
        lines, PLAN, UNTIL, closed_order_retention=timedelta(days=30), partitions=8
    )
    tiers = {str(a.customer.tier) for a in result.alerts if a.order_id == "PO-3301" and a.customer}
    assert tiers == {"platinum"}
