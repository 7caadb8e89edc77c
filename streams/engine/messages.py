"""Messages between the engine's partitioned agents (internal topics), typed.

The foreign-key joins (customer -> orders, unit -> orders) run over three
internal topics instead of faust GlobalTables (faust #283): each message is
keyed by the partition key of its receiver, so every piece of state has exactly
one owner. Every answer carries a version that only grows, so a receiver keeps
the newest answer whatever redelivery or rebalancing did to their order.

This module owns the wire form: each message is a (frozen but for `Occupancy`) dataclass with
`encode()` (compact JSON, these messages are hot and never leave the engine);
a Kafka message of an internal topic is a bundle of them (`encode_bundle`: the
messages one agent batch sent that partition, in order), and one `decode_*` per
topic gives a bundle's messages. Nothing else builds or reads their dicts.

Why a redelivered or repeated message is harmless, per kind (a batch that
raises is handled again item by item, and what it had collected is sent too,
so a message may arrive twice, and an older one after a newer one only from an
older batch of the same sender partition, which Kafka keeps in order):
- `CustomerAnswer`: the order keeps the answer with the highest CRM offset
  (`version`); an equal or older one changes nothing.
- `DowntimeAnswer`: the order keeps the answer with the highest (status
  records, occupancy version) pair per unit; an equal or older one changes nothing.
- `Occupancy`: the unit keeps per order the entry with the highest `version`
  (the order's visit version); an older one is skipped, the same one is applied
  again to the same entry and answered again (the same versioned answer); an
  order that left keeps a tombstone for a while, so its report or `forget` that
  comes again changes nothing, and a `forget` of an order that has no entry is a
  no-op (streams.engine.unit_processor).
- `Subscription`: a set membership (add or discard); a repeated subscribe
  answers the customer's current fact again (itself a versioned answer).
- `Tick`: the partition clock only moves forward; firing a deadline twice finds
  the order already moved on (a stale deadline entry is skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.rules.facts import CustomerFact

ORDER_INBOX = "order-inbox"
"""key order_id: customer answers, unit downtime answers, clock ticks."""
CUSTOMER_INBOX = "customer-inbox"
"""key customer_id: an order (un)subscribing to its customer."""
UNIT_INBOX = "unit-inbox"
"""key unit_id: an order's visits at a unit (its occupancy), or that it left."""

INTERNAL_TOPICS = (ORDER_INBOX, CUSTOMER_INBOX, UNIT_INBOX)

Visit = list[Any]
"""[stage, visit, start_ms | None, end_ms | None]: one visit of an order at a unit."""
DowntimeJson = list[Any]
"""A downtime in `streams.engine.order_slot.downtime_to_json` form."""


@dataclass(frozen=True, slots=True)
class CustomerAnswer:
    """customer -> order: the customer's CRM fact (None: unknown) at CRM log offset `version`."""

    order_id: str
    customer_id: str
    version: int
    customer: CustomerFact | None

    def key(self) -> bytes:
        return self.order_id.encode()

    def encode(self) -> bytes:
        fact = None if self.customer is None else self.customer.to_json()
        return orjson.dumps(
            {"k": "customer", "o": self.order_id, "cid": self.customer_id, "v": self.version,
             "c": fact}
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DowntimeAnswer:
    """unit -> order: the unit's downtimes that overlap the order's visits there."""

    order_id: str
    unit_id: str
    version: tuple[int, int]
    """(status records the unit took in, the order's occupancy version answered); the
    first never below an earlier answer's to the order (`OccupancyEntry.told`: a crash
    may leave the unit fewer records taken)."""
    downtimes: list[DowntimeJson]
    floor_ms: int | None = None
    """The unit's fold horizon: downtimes starting before it were folded away."""

    def key(self) -> bytes:
        return self.order_id.encode()

    def encode(self) -> bytes:
        return orjson.dumps(
            {"k": "downtimes", "o": self.order_id, "u": self.unit_id, "v": list(self.version),
             "d": self.downtimes, "h": self.floor_ms}
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock of one partition moved to `t_ms`: fire the deadlines that fell due."""

    t_ms: int

    def encode(self) -> bytes:
        return orjson.dumps({"k": "tick", "t": self.t_ms})


@dataclass(frozen=True, slots=True)
class Subscription:
    """order -> customer: the order belongs to (or left) the customer."""

    order_id: str
    customer_id: str
    subscribe: bool

    def key(self) -> bytes:
        return self.customer_id.encode()

    def encode(self) -> bytes:
        kind = "subscribe" if self.subscribe else "unsubscribe"
        return orjson.dumps({"k": kind, "o": self.order_id, "cid": self.customer_id})


# Not frozen (never mutated): an order sends one for each unit whose visits a derivation
# changed, about one per scan, and a frozen dataclass's __init__ costs ~3.5 times a plain
# one (~2 % of the pure order path's instructions). Not hashable anyway: `visits` is a list.
@dataclass(slots=True)
class Occupancy:
    """order -> unit: the order's visits at the unit (`forget`: it left the state)."""

    order_id: str
    unit_id: str
    version: int
    visits: list[Visit] = field(default_factory=list)
    forget: bool = False

    def key(self) -> bytes:
        return self.unit_id.encode()

    def encode(self) -> bytes:
        return orjson.dumps(
            {"k": "forget" if self.forget else "occupancy", "o": self.order_id,
             "u": self.unit_id, "v": self.version, "visits": self.visits}
        )  # fmt: skip


OrderInbox = CustomerAnswer | DowntimeAnswer | Tick
JoinMessage = CustomerAnswer | DowntimeAnswer | Subscription | Occupancy
"""A message one agent sends another during a batch (bundled by `output_sender.OutputSender`)."""

BUNDLE_MAX_BYTES = 256 * 1024
"""A bundle is closed before it would grow past this (half the producer's batch size,
`streams.app`): however many messages one batch sends a partition, each Kafka message
stays far below the producer's `max_request_size`. One message over it is a bundle alone."""


def encode_bundle(messages: list[bytes]) -> bytes:
    """One Kafka message of an internal topic: a JSON array of the messages' encodings.

    Every internal message (ticks included, as bundles of one) goes as a bundle: the
    messages one agent batch sends a partition, in send order. The encodings are
    compact JSON objects, so joining them is the array; nothing is encoded twice.
    """
    return b"[" + b",".join(messages) + b"]"


def _bundle(raw: bytes) -> list[Any]:
    """The bodies of a bundle; a bare object (one message, as written before bundles
    existed) is a bundle of one, so messages in flight across an upgrade are not lost."""
    body = orjson.loads(raw)
    if isinstance(body, dict):
        return [body]
    if not isinstance(body, list) or not body:
        raise ValueError("not a bundle: a non-empty JSON array of messages")
    return body


def decode_order_inbox(raw: bytes) -> list[OrderInbox]:
    """The messages of one order-inbox bundle, in send order; raises if it is corrupt."""
    return [_order_inbox(body) for body in _bundle(raw)]


def decode_customer_inbox(raw: bytes) -> list[Subscription]:
    return [_subscription(body) for body in _bundle(raw)]


def decode_unit_inbox(raw: bytes) -> list[Occupancy]:
    return [_occupancy(body) for body in _bundle(raw)]


def _order_inbox(body: Any) -> OrderInbox:
    kind = body["k"]
    if kind == "tick":
        return Tick(body["t"])
    if kind == "customer":
        fact = body["c"]
        return CustomerAnswer(
            body["o"],
            body["cid"],
            body["v"],
            None if fact is None else CustomerFact.from_json(fact),
        )
    if kind == "downtimes":
        version = body["v"]
        return DowntimeAnswer(
            body["o"], body["u"], (version[0], version[1]), body["d"], body.get("h")
        )
    raise ValueError(f"not an order-inbox message: kind {kind!r}")


def _subscription(body: Any) -> Subscription:
    if body["k"] not in ("subscribe", "unsubscribe"):
        raise ValueError(f"not a customer-inbox message: kind {body['k']!r}")
    return Subscription(body["o"], body["cid"], body["k"] == "subscribe")


def _occupancy(body: Any) -> Occupancy:
    if body["k"] not in ("occupancy", "forget"):
        raise ValueError(f"not a unit-inbox message: kind {body['k']!r}")
    return Occupancy(body["o"], body["u"], body["v"], body["visits"], body["k"] == "forget")
