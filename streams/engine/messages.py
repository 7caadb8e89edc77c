"""Messages between the engine's partitioned agents (internal topics).

The foreign-key joins (customer -> orders, unit -> orders) run over three
internal topics instead of faust GlobalTables (faust #283): each message is
keyed by the partition key of its receiver, so every piece of state has exactly
one owner. Every answer carries a version that only grows, so a receiver keeps
the newest answer whatever redelivery or rebalancing did to their order.

Plain JSON lists/dicts: these messages are hot and never leave the engine.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

ORDER_INBOX = "order-inbox"
"""key order_id: customer answers, unit downtime answers, clock ticks."""
CUSTOMER_INBOX = "customer-inbox"
"""key customer_id: an order (un)subscribing to its customer."""
UNIT_INBOX = "unit-inbox"
"""key unit_id: an order's visits at a unit (its occupancy)."""

INTERNAL_TOPICS = (ORDER_INBOX, CUSTOMER_INBOX, UNIT_INBOX)


class CustomerAnswer(TypedDict):
    k: Literal["customer"]
    o: str
    cid: str
    v: int
    c: list[Any] | None


class DowntimeAnswer(TypedDict):
    k: Literal["downtimes"]
    o: str
    u: str
    v: list[int]
    d: list[list[Any]]


class Tick(TypedDict):
    k: Literal["tick"]
    t: int


class Subscription(TypedDict):
    k: Literal["subscribe", "unsubscribe"]
    o: str
    cid: str


class Occupancy(TypedDict):
    k: Literal["occupancy"]
    o: str
    u: str
    v: int
    visits: list[list[Any]]
    """[stage, visit, start_ms | None, end_ms | None] per visit of the order at the unit."""
