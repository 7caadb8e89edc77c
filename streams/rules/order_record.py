"""Fold an order's `orders` records into the record the rules use (RULES.md "The facts").

The fold runs in (`event_time`, log offset) order, not arrival order, so a late
`updated` re-baselines the order the same way wherever it lands in the log.
Whether an `updated` is a dead letter (its `due_at` not after `placed_at`) is also
decided here, because only the fold knows the `placed_at` in force at that point.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

from schemas.plan import SlaPlan
from streams.rules.facts import OrderRecordFact

_RECORD_ORDER = attrgetter("event_time", "offset")
"""`OrderRecordFact.sort_key` without a Python call per record."""


# Not frozen: built afresh on every derivation of an order, and a frozen
# dataclass's __init__ costs about four times a plain one. Never mutated.
@dataclass(slots=True)
class OrderRecord:
    customer_id: str
    product: str | None
    quantity: float | None
    placed_at: datetime
    due_at: datetime
    route: tuple[str, ...]


# Not frozen: built afresh on every derivation of an order, and a frozen
# dataclass's __init__ costs about four times a plain one. Never mutated.
@dataclass(slots=True)
class RecordFold:
    record: OrderRecord | None
    """None until a valid `created` exists."""
    route: tuple[str, ...]
    """The record's route, or the plan's default route without a record."""
    cancelled_at: datetime | None
    rejected: list[OrderRecordFact] = field(default_factory=list)
    """Records that are dead letters (bad `due_at`, a route the plan does not know)."""


def _route_ok(route: tuple[str, ...] | None, plan: SlaPlan) -> bool:
    if route is None:
        return True
    return bool(route) and len(set(route)) == len(route) and all(plan.knows(s) for s in route)


def refusal(fact: OrderRecordFact, plan: SlaPlan) -> tuple[str, str]:
    """Why the fold refused a record: the dead letter's `loc` and message."""
    if not _route_ok(fact.route, plan):
        unknown = [s for s in fact.route or () if not plan.knows(s)]
        if unknown:  # decoding refuses these; a record stored before the plan changed
            names = ", ".join(repr(s) for s in unknown)
            return "route", f"route names {names}, not a stage of the SLA plan"
        return "route", "route is empty or repeats a stage"
    return "due_at", "due_at is not after placed_at"


def fold_records(records: Iterable[OrderRecordFact], plan: SlaPlan) -> RecordFold:
    """Created sets every field, updated patches due_at/quantity/customer/route.

    An `updated` folded before any `created` has nothing to patch and is kept as a
    fact without effect (a later-folded `created` sets every field anyway).
    """
    record: OrderRecord | None = None
    cancelled_at: datetime | None = None
    rejected: list[OrderRecordFact] = []
    for fact in sorted(records, key=_RECORD_ORDER):
        if fact.op == "cancelled":
            if cancelled_at is None:
                cancelled_at = fact.event_time
            continue
        if not _route_ok(fact.route, plan):
            rejected.append(fact)
            continue
        if fact.op == "created":
            if (
                fact.customer_id is None
                or fact.placed_at is None
                or fact.due_at is None
                or fact.due_at <= fact.placed_at
            ):
                rejected.append(fact)
                continue
            record = OrderRecord(
                customer_id=fact.customer_id,
                product=fact.product,
                quantity=fact.quantity,
                placed_at=fact.placed_at,
                due_at=fact.due_at,
                route=fact.route or plan.route,
            )
        elif fact.op == "updated" and record is not None:
            due_at = fact.due_at or record.due_at
            if due_at <= record.placed_at:
                rejected.append(fact)
                continue
            record = OrderRecord(
                customer_id=fact.customer_id or record.customer_id,
                product=record.product,
                quantity=fact.quantity if fact.quantity is not None else record.quantity,
                placed_at=record.placed_at,
                due_at=due_at,
                route=fact.route or record.route,
            )
    route = record.route if record is not None else plan.route
    return RecordFold(record, route, cancelled_at, rejected)
