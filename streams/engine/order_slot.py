"""Everything the engine keeps about one order, as one table value.

One value per `order_id` in a changelog-backed table, so an order's state moves
with its partition and is recovered with it. Besides the facts (RULES.md "The
facts") it holds the joined customer and unit downtimes as last received, the
alerts published so far (to publish only differences), and bookkeeping that
keeps every effect idempotent under at-least-once redelivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.rules.downtimes import Downtime
from streams.rules.facts import CustomerFact, OrderFacts, from_ms, to_ms


def downtime_to_json(d: Downtime) -> list[Any]:
    return [
        d.unit_id,
        d.stage,
        d.kind,
        d.reason,
        to_ms(d.start),
        None if d.end is None else to_ms(d.end),
        d.event_id,
    ]


def downtime_from_json(data: list[Any]) -> Downtime:
    unit_id, stage, kind, reason, start, end, event_id = data
    return Downtime(
        unit_id,
        stage,
        kind,
        reason,
        from_ms(start),
        None if end is None else from_ms(end),
        event_id,
    )


@dataclass(slots=True)
class OrderSlot:
    facts: OrderFacts
    partition: int = -1
    customer: CustomerFact | None = None
    customer_id: str | None = None
    """The customer the join last answered for (None: no answer yet)."""
    customer_version: int = -1
    """CRM log offset of the joined customer record: the newest answer wins."""
    downtimes: dict[str, list[Downtime]] = field(default_factory=dict)
    downtime_versions: dict[str, list[int]] = field(default_factory=dict)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    """alert_id -> the alert as last published (JSON form)."""
    subscribed_customer: str | None = None
    occupancy_sent: dict[str, list[list[Any]]] = field(default_factory=dict)
    """unit_id -> the visits at that unit as last sent to the unit's partition."""
    occupancy_version: int = 0
    dead_lettered: list[str] = field(default_factory=list)
    version: int = 0
    next_deadline_ms: int | None = None
    clock_ms: int = 0
    """The clock of the last evaluation: restores an event-time clock after recovery."""
    closed_at_ms: int | None = None
    """When the order completed or was cancelled (None while open)."""
    downtime_floor: dict[str, int] = field(default_factory=dict)
    """unit_id -> the unit's fold horizon: downtimes starting before it were folded away
    there, and this order's alerts about them are final (see streams.engine.limits)."""
    pending_ms: int | None = None
    """Facts changed since the last derivation, which is owed at this clock (None: the
    derived fields are current). Only a worker that defers derivations sets it
    (`OrderProcessor.on_inputs`); stored, so a restarted worker still owes it."""
    plan: str | None = None
    """The fingerprint of the plan of the last derivation (`SlaPlan.fingerprint`; None in
    values stored before it was kept): a worker with another plan re-derives the order
    at once on recovery instead of at its next record or its old plan's deadline."""
    snapshot_at: list[Any] | None = None
    """[topic code, offset] of the input whose step sent the order's last snapshot (None:
    none sent, or stored before it was kept). Recovery publishes the snapshot again
    while that input is not committed: Kafka may have refused it, or the worker died
    before it was delivered, while the step's changelog record was (`on_recovered`)."""

    def to_json(self) -> dict[str, Any]:
        data = self._json()
        if self.pending_ms is not None:  # absent otherwise: stored values as before
            data["pd"] = self.pending_ms
        if self.plan is not None:
            data["pl"] = self.plan
        if self.snapshot_at is not None:
            data["sa"] = self.snapshot_at
        return data

    def _json(self) -> dict[str, Any]:
        return {
            "f": self.facts.to_json(),
            "p": self.partition,
            "c": None if self.customer is None else self.customer.to_json(),
            "ci": self.customer_id,
            "cv": self.customer_version,
            "d": {u: [downtime_to_json(d) for d in ds] for u, ds in self.downtimes.items()},
            "dv": self.downtime_versions,
            "a": self.published,
            "sc": self.subscribed_customer,
            "os": self.occupancy_sent,
            "ov": self.occupancy_version,
            "dl": self.dead_lettered,
            "v": self.version,
            "nd": self.next_deadline_ms,
            "t": self.clock_ms,
            "cl": self.closed_at_ms,
            "df": self.downtime_floor,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrderSlot:
        customer, downtimes, get = data["c"], data["d"], data.get
        return cls(  # positional, in the fields' order: one per slot decode, 20 fields
            OrderFacts.from_json(data["f"]),
            data["p"],
            None if customer is None else CustomerFact.from_json(customer),
            data["ci"],
            data["cv"],
            {u: [downtime_from_json(d) for d in ds] for u, ds in downtimes.items()},
            data["dv"],
            data["a"],
            data["sc"],
            data["os"],
            data["ov"],
            data["dl"],
            data["v"],
            data["nd"],
            get("t", 0),
            get("cl"),
            get("df", {}),
            get("pd"),
            get("pl"),
            get("sa"),
        )

    @classmethod
    def new(cls, order_id: str) -> OrderSlot:
        return cls(facts=OrderFacts(order_id))


EVICTED = "x"
"""The key of an evicted order's table value `{"x": closed_at_ms, "p": partition}`."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What recovery and the deadline check read of a stored order, without decoding it all."""

    partition: int
    evicted: bool
    next_deadline_ms: int | None
    clock_ms: int | None
    published: dict[str, dict[str, Any]]
    pending: bool = False
    """A derivation is owed (`OrderSlot.pending_ms`)."""
    plan: str | None = None
    """`OrderSlot.plan`."""
    snapshot_at: list[Any] | None = None
    """`OrderSlot.snapshot_at`."""


def peek(raw: bytes) -> tuple[Stored, dict[str, Any]]:
    data = orjson.loads(raw)
    if EVICTED in data:
        return Stored(data["p"], True, None, None, {}), data
    pending = data.get("pd")
    clock = data.get("t") if pending is None else max(pending, data.get("t") or 0)
    stored = Stored(
        data["p"],
        False,
        data["nd"],
        clock,
        data["a"],
        pending is not None,
        data.get("pl"),
        data.get("sa"),
    )
    return stored, data


def decode_slot(order_id: str, raw: bytes | None) -> OrderSlot | None:
    """The stored slot (a new one if unknown); None once the order was evicted."""
    if raw is None:
        return OrderSlot.new(order_id)
    data = orjson.loads(raw)
    return None if EVICTED in data else OrderSlot.from_json(data)


def evicted_json(slot: OrderSlot) -> dict[str, Any]:
    return {EVICTED: slot.closed_at_ms, "p": slot.partition}
