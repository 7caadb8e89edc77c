"""The customer side of the engine: CRM records and the orders subscribed to them.

A customer keeps its latest CRM fact with the log offset it came from (the
answers' version); each order that belongs to the customer subscribes through
the customer inbox and gets the fact back, now and on every later change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.customers import TOMBSTONE, Customer, Tombstone
from schemas.dead_letter import ReasonCode
from schemas.validation import KEYLESS_TOMBSTONE
from streams.codecs import Rejected
from streams.engine.messages import (
    CUSTOMER_INBOX,
    CustomerAnswer,
    Subscription,
    decode_customer_inbox,
)
from streams.engine.runtime import EngineRuntime, as_rejected, message_key
from streams.rules.facts import CustomerFact
from streams.topics import CUSTOMERS


@dataclass(frozen=True, slots=True)
class CustomerSlot:
    """A customer's table value: its CRM fact (None: unknown) and the offset it came from."""

    fact: CustomerFact | None = None
    version: int = -1

    def to_json(self) -> dict[str, Any]:
        return {"c": None if self.fact is None else self.fact.to_json(), "v": self.version}

    @classmethod
    def decode(cls, raw: bytes | None) -> CustomerSlot:
        if raw is None:
            return cls()
        data = orjson.loads(raw)
        fact = None if data["c"] is None else CustomerFact.from_json(data["c"])
        return cls(fact, data["v"])


_KEYLESS_TOMBSTONE = Rejected(None, ReasonCode.VALIDATION_FAILED, [KEYLESS_TOMBSTONE])
"""Kafka takes no keyless record on the compacted CRM topic, but one run uncompacted does:
such a tombstone was acked and ignored, the one silent drop left (CONTRACT v1.2). A
scenario line of one is the replay's dead letter, with the same reason and error."""


class CustomerAgents:
    def __init__(self, rt: EngineRuntime) -> None:
        self.rt = rt
        self._subscribers: dict[str, set[str]] | None = None
        """customer_id -> its orders: a cache of the subscription table."""

    def subscribers_of(self, customer_id: str) -> set[str]:
        if self._subscribers is None:
            self.rebuild_index()
        assert self._subscribers is not None
        return self._subscribers.setdefault(customer_id, set())

    async def on_customers(self, events: Sequence[Any]) -> None:
        await self.rt.each(CUSTOMERS, events, self.on_customer)

    async def on_inbox(self, events: Sequence[Any]) -> None:
        """Each bundle's subscriptions in order, each guarded on its own (as one message
        was): a corrupt bundle, or a subscription that raises, is a `processing_error`
        naming the bundle, and the ones after it are still handled."""
        rt = self.rt
        for item in await rt.unbundled(CUSTOMER_INBOX, events, decode_customer_inbox):
            await rt.guarded(CUSTOMER_INBOX, [item], self._subscribe, _message_of)

    async def on_customer(self, event: Any) -> None:
        rt = self.rt
        message, value = event.message, event.value
        if isinstance(value, Customer):
            if rt.diverted(CUSTOMERS, message, value):
                return
            customer_id: str | None = value.customer_id
            fact: CustomerFact | None = CustomerFact(
                value.customer_id, value.name, value.tier.value
            )
        elif isinstance(value, Tombstone) or value is None:
            if rt.diverted(CUSTOMERS, message, TOMBSTONE):
                return  # a dead letter (its key is no customer id), or forwarded
            customer_id, fact = message_key(message), None
        else:
            rt.dead_letter(CUSTOMERS, message, as_rejected(value))
            return
        if customer_id is None:  # a tombstone without a key names no customer to delete
            rt.dead_letter(CUSTOMERS, message, _KEYLESS_TOMBSTONE)
            return
        known = CustomerSlot.decode(rt.get(rt.customer_table, customer_id))
        if message.offset < known.version:
            return
        if message.offset > known.version:
            rt.put(
                rt.customer_table,
                customer_id,
                rt.encoded(CustomerSlot(fact, message.offset).to_json()),
            )
        # the very record stored (offset == version) is read again only after a stop
        # whose commit never passed it: its answers may have been refused or lost while
        # its changelog record was delivered, so they are sent again (versioned, as an
        # order re-announces its joins when one of its records comes again)
        for order_id in sorted(self.subscribers_of(customer_id)):
            answer = CustomerAnswer(order_id, customer_id, message.offset, fact)
            rt.join(rt.out.order_inbox, answer)

    async def _subscribe(self, items: Sequence[tuple[Any, Subscription]]) -> None:
        for event, sub in items:
            with self.rt.acting_for(event):
                self.on_subscription(sub)

    def on_subscription(self, sub: Subscription) -> None:
        """An order (un)subscribes; a subscriber gets the customer's fact at once."""
        rt = self.rt
        members = self.subscribers_of(sub.customer_id)
        sub_key = f"{sub.customer_id}|{sub.order_id}"
        if sub.subscribe:
            known = CustomerSlot.decode(rt.get(rt.customer_table, sub.customer_id))
            members.add(sub.order_id)
            if sub_key not in rt.subscription_table:
                rt.put(rt.subscription_table, sub_key, b"1")
            answer = CustomerAnswer(sub.order_id, sub.customer_id, known.version, known.fact)
            rt.join(rt.out.order_inbox, answer)
        else:
            members.discard(sub.order_id)
            rt.delete(rt.subscription_table, sub_key)

    async def on_recovered(self) -> None:
        self.rebuild_index()

    def rebuild_index(self) -> None:
        index: dict[str, set[str]] = {}
        for key in list(self.rt.subscription_table.keys()):
            customer_id, _, order_id = str(key).partition("|")
            index.setdefault(customer_id, set()).add(order_id)
        self._subscribers = index


def _message_of(item: tuple[Any, Subscription]) -> Any:
    return item[0].message
