"""The monitoring engine's topics, tables and agents on one faust app.

Lifecycle and guarantees:
- Every agent runs at concurrency 1 (faust #606) with at-least-once delivery;
  each input is applied to its owner's table value in one synchronous step,
  so redelivered inputs find their `event_id`/offset already known and do
  nothing.
- The agents of one worker share the tables, so each handles one event at a
  time under one lock (`_turn`): read a value, write it back, send its outputs.
  No agent can then publish an alert version older than one another agent has
  already sent. faust flushes the producer before it commits offsets.
- State lives only in changelog-backed tables keyed by the partition key:
  orders by `order_id`, customers by `customer_id`, units by `unit_id`. The
  in-memory indexes (deadlines, subscribers, unit occupancy) are caches of
  those tables, rebuilt after recovery.
- After recovery every alert the worker owns is announced again (consumers
  keep the latest per `alert_id`), which heals outputs lost in a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import faust
import orjson

from chainwatch.logs import get_logger
from schemas.customers import Customer, Tombstone
from schemas.dead_letter import DeadLetter, DeadLetterSource
from schemas.orders import OrderRecord
from schemas.plan import SlaPlan
from schemas.scans import ScanEvent
from schemas.unit_status import UnitStatus
from streams.codecs import InputCodec, Rejected
from streams.engine.clock import DeadlineIndex, EngineClock
from streams.engine.messages import CUSTOMER_INBOX, ORDER_INBOX, UNIT_INBOX
from streams.engine.order_processor import Effects, OrderProcessor
from streams.engine.order_slot import OrderSlot
from streams.engine.unit_processor import OccupancyEntry, UnitEffects, UnitProcessor, UnitSlot
from streams.rules.facts import CustomerFact, from_ms, to_ms
from streams.rules.reference import unit_status_fact
from streams.topics import (
    ALERTS,
    CUSTOMERS,
    DEAD_LETTER,
    ORDER_STATE,
    ORDERS,
    SCANS,
    UNIT_STATUS,
    TopicNames,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    names: TopicNames
    plan: SlaPlan
    clock: Literal["live", "event"] = "live"
    snapshots: bool = True
    tick_interval_s: float = 0.2


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _key(message: Any) -> str | None:
    key = message.key
    if key is None:
        return None
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


class Engine:
    """Registers the engine on `app`; one instance per app, no module-level state."""

    def __init__(self, app: faust.App, config: EngineConfig) -> None:
        self.app = app
        self.config = config
        self.plan = config.plan
        self.orders = OrderProcessor(config.plan, snapshots=config.snapshots)
        self.units = UnitProcessor(config.plan)
        self.clock = EngineClock(config.clock)
        self.deadlines = DeadlineIndex()
        self._subscribers: dict[str, set[str]] | None = None
        self._unit_orders: dict[str, set[str]] | None = None
        self._ticks_in_flight: set[int] = set()
        self.processed = 0
        self._turn = asyncio.Lock()
        self._declare()

    def _agent(self, handle: Callable[[Any], Awaitable[None]]) -> Any:
        """A faust agent that hands each event to `handle`, one event at a time per worker."""

        async def agent(stream: Any) -> AsyncIterator[None]:
            async for event in stream.events():
                async with self._turn:
                    await handle(event)
                yield None

        return agent

    # --- declaration ------------------------------------------------------------

    def _input(self, name: str) -> Any:
        return self.app.topic(
            self.config.names(name),
            key_serializer="raw",
            value_serializer=InputCodec(name, self.plan),
            allow_empty=True,
        )

    def _internal(self, name: str) -> Any:
        return self.app.topic(
            f"{self.app.conf.id}-{name}",
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
            partitions=self.app.conf.topic_partitions,
        )

    def _output(self, name: str) -> Any:
        return self.app.topic(self.config.names(name), key_serializer="raw", value_serializer="raw")

    def _table(self, name: str) -> Any:
        return self.app.Table(name, key_type=str, value_type=bytes)

    def _declare(self) -> None:
        app = self.app
        self.scans_topic = self._input(SCANS)
        self.orders_topic = self._input(ORDERS)
        self.customers_topic = self._input(CUSTOMERS)
        self.unit_status_topic = self._input(UNIT_STATUS)
        self.order_inbox = self._internal(ORDER_INBOX)
        self.customer_inbox = self._internal(CUSTOMER_INBOX)
        self.unit_inbox = self._internal(UNIT_INBOX)
        self.alerts_topic = self._output(ALERTS)
        self.state_topic = self._output(ORDER_STATE)
        self.dead_letter_topic = self._output(DEAD_LETTER)

        self.order_table = self._table("orders")
        self.customer_table = self._table("customers")
        self.subscription_table = self._table("customer-subscriptions")
        self.unit_table = self._table("units")
        self.occupancy_table = self._table("unit-occupancy")
        self.order_table.on_recover(self._on_orders_recovered)
        self.subscription_table.on_recover(self._on_subscriptions_recovered)
        self.occupancy_table.on_recover(self._on_occupancy_recovered)
        self.unit_table.on_recover(self._on_units_recovered)

        app.agent(self.scans_topic, name="scans", concurrency=1)(self._agent(self._on_scans))
        app.agent(self.orders_topic, name="orders", concurrency=1)(self._agent(self._on_orders))
        app.agent(self.order_inbox, name="order-inbox", concurrency=1)(
            self._agent(self._on_order_inbox)
        )
        app.agent(self.customers_topic, name="customers", concurrency=1)(
            self._agent(self._on_customers)
        )
        app.agent(self.customer_inbox, name="customer-inbox", concurrency=1)(
            self._agent(self._on_customer_inbox)
        )
        app.agent(self.unit_status_topic, name="unit-status", concurrency=1)(
            self._agent(self._on_unit)
        )
        app.agent(self.unit_inbox, name="unit-inbox", concurrency=1)(
            self._agent(self._on_unit_inbox)
        )
        if self.config.clock == "live":
            app.timer(self.config.tick_interval_s, name="deadline-ticks")(self._tick_due)

    # --- shared steps -------------------------------------------------------------

    async def _dead_letter(self, logical_topic: str, message: Any, rejected: Rejected) -> None:
        letter = DeadLetter.build(
            rejected.raw,
            DeadLetterSource(
                kind="kafka",
                topic=logical_topic,
                partition=message.partition,
                offset=message.offset,
            ),
            rejected.errors,
            rejected.reason_code,
            datetime.now(UTC),
            key=message.key if isinstance(message.key, bytes) else None,
        )
        await self.dead_letter_topic.send(
            key=letter.dead_letter_id.encode(), value=letter.model_dump_json().encode()
        )

    def _load_order(self, order_id: str) -> OrderSlot:
        raw = self.order_table.get(order_id)
        return OrderSlot.new(order_id) if raw is None else OrderSlot.from_json(orjson.loads(raw))

    async def _apply(self, slot: OrderSlot, effects: Effects) -> None:
        """Store an order's slot, then send its effects (see the module docstring).

        The slot is written before the first `await`: agents of one worker share
        the tables, and another agent must never read a slot older than the one
        whose effects are being sent.
        """
        order_id = slot.facts.order_id
        if effects.changed:
            self.order_table[order_id] = _json(slot.to_json())
            if slot.next_deadline_ms is not None:
                self.deadlines.push(slot.partition, slot.next_deadline_ms, order_id)
        for alert in effects.alerts:
            await self.alerts_topic.send(key=alert["alert_id"].encode(), value=_json(alert))
        if effects.snapshot is not None:
            await self.state_topic.send(key=order_id.encode(), value=effects.snapshot)
        for letter in effects.dead_letters:
            await self.dead_letter_topic.send(
                key=letter.dead_letter_id.encode(), value=letter.model_dump_json().encode()
            )
        for sub in effects.subscriptions:
            await self.customer_inbox.send(key=sub["cid"].encode(), value=_json(sub))
        for occ in effects.occupancy:
            await self.unit_inbox.send(key=occ["u"].encode(), value=_json(occ))

    async def _fire_due(self, partition: int, now_ms: int) -> None:
        """Re-derive the orders of `partition` whose next deadline has come."""
        now = from_ms(now_ms)
        for due_ms, order_id in list(self.deadlines.pop_due(partition, now_ms)):
            raw = self.order_table.get(order_id)
            if raw is None:
                continue
            slot = OrderSlot.from_json(orjson.loads(raw))
            if slot.next_deadline_ms != due_ms:
                continue  # stale entry: the order moved on since it was indexed
            await self._apply(slot, self.orders.on_clock(slot, now))

    # --- order side -----------------------------------------------------------------

    async def _on_scans(self, event: Any) -> None:
        message, value = event.message, event.value
        if not isinstance(value, ScanEvent):
            await self._dead_letter(SCANS, message, _as_rejected(value))
        else:
            now_ms = self.clock.observe(message.partition, to_ms(value.event_time))
            slot = self._load_order(value.order_id)
            slot.partition = message.partition
            source = DeadLetterSource(
                kind="kafka", topic=SCANS, partition=message.partition, offset=message.offset
            )
            effects = self.orders.on_scan(slot, value, source, message.value, from_ms(now_ms))
            await self._apply(slot, effects)
            await self._fire_due(message.partition, now_ms)
        self.processed += 1

    async def _on_orders(self, event: Any) -> None:
        message, value = event.message, event.value
        if not isinstance(value, OrderRecord):
            await self._dead_letter(ORDERS, message, _as_rejected(value))
        else:
            event_time = value.event_time or value.placed_at
            now_ms = self.clock.observe(
                message.partition, None if event_time is None else to_ms(event_time)
            )
            slot = self._load_order(value.order_id)
            slot.partition = message.partition
            source = DeadLetterSource(
                kind="kafka", topic=ORDERS, partition=message.partition, offset=message.offset
            )
            effects = self.orders.on_order_record(
                slot, value, source, message.value, from_ms(now_ms)
            )
            await self._apply(slot, effects)
            await self._fire_due(message.partition, now_ms)
        self.processed += 1

    async def _on_order_inbox(self, event: Any) -> None:
        message = event.message
        body = orjson.loads(event.value)
        kind = body["k"]
        if kind == "tick":
            self._ticks_in_flight.discard(message.partition)
            now_ms = self.clock.observe(message.partition, body["t"])
            await self._fire_due(message.partition, now_ms)
        else:
            now_ms = self.clock.now(message.partition)
            slot = self._load_order(body["o"])
            slot.partition = message.partition
            now = from_ms(now_ms)
            if kind == "customer":
                effects = self.orders.on_customer(slot, body, now)
            else:
                effects = self.orders.on_downtimes(slot, body, now)
            if effects.changed:
                await self._apply(slot, effects)

    # --- customer side ----------------------------------------------------------

    def _subscribers_of(self, customer_id: str) -> set[str]:
        if self._subscribers is None:
            self._on_subscriptions_recovered_sync()
        assert self._subscribers is not None
        return self._subscribers.setdefault(customer_id, set())

    async def _on_customers(self, event: Any) -> None:
        message, value = event.message, event.value
        if isinstance(value, Customer):
            customer_id: str | None = value.customer_id
            fact: list[Any] | None = CustomerFact(
                value.customer_id, value.name, value.tier.value
            ).to_json()
        elif isinstance(value, Tombstone) or value is None:
            customer_id, fact = _key(message), None
        else:
            await self._dead_letter(CUSTOMERS, message, _as_rejected(value))
            return
        if customer_id is None:
            return
        stored = self.customer_table.get(customer_id)
        known = orjson.loads(stored) if stored is not None else {"c": None, "v": -1}
        if message.offset > known["v"]:
            self.customer_table[customer_id] = _json({"c": fact, "v": message.offset})
            for order_id in sorted(self._subscribers_of(customer_id)):
                await self.order_inbox.send(
                    key=order_id.encode(),
                    value=_json(
                        {"k": "customer", "o": order_id, "cid": customer_id,
                         "v": message.offset, "c": fact}
                    ),
                )  # fmt: skip

    async def _on_customer_inbox(self, event: Any) -> None:
        body = orjson.loads(event.value)
        customer_id, order_id = body["cid"], body["o"]
        members = self._subscribers_of(customer_id)
        sub_key = f"{customer_id}|{order_id}"
        if body["k"] == "subscribe":
            stored = self.customer_table.get(customer_id)
            known = orjson.loads(stored) if stored is not None else {"c": None, "v": -1}
            members.add(order_id)
            if sub_key not in self.subscription_table:
                self.subscription_table[sub_key] = b"1"
            await self.order_inbox.send(
                key=order_id.encode(),
                value=_json(
                    {"k": "customer", "o": order_id, "cid": customer_id,
                     "v": known["v"], "c": known["c"]}
                ),
            )  # fmt: skip
        else:
            members.discard(order_id)
            if sub_key in self.subscription_table:
                del self.subscription_table[sub_key]

    # --- unit side ----------------------------------------------------------------

    def _orders_at(self, unit_id: str) -> set[str]:
        if self._unit_orders is None:
            self._on_occupancy_recovered_sync()
        assert self._unit_orders is not None
        return self._unit_orders.setdefault(unit_id, set())

    def _load_unit(self, unit_id: str) -> UnitSlot:
        raw = self.unit_table.get(unit_id)
        return UnitSlot(unit_id) if raw is None else UnitSlot.from_json(orjson.loads(raw))

    async def _apply_unit(self, slot: UnitSlot, effects: UnitEffects, store: bool) -> None:
        """Store first, then send (as `_apply`)."""
        for order_id, entry in effects.changed_entries.items():
            self.occupancy_table[f"{slot.unit_id}|{order_id}"] = _json(entry.to_json())
        if store or effects.alerts:
            self.unit_table[slot.unit_id] = _json(slot.to_json())
        for answer in effects.answers:
            await self.order_inbox.send(key=answer["o"].encode(), value=_json(answer))
        for alert in effects.alerts:
            await self.alerts_topic.send(key=alert["alert_id"].encode(), value=_json(alert))

    async def _on_unit(self, event: Any) -> None:
        message, value = event.message, event.value
        if not isinstance(value, UnitStatus):
            await self._dead_letter(UNIT_STATUS, message, _as_rejected(value))
        else:
            now_ms = self.clock.observe(message.partition, to_ms(value.event_time))
            slot = self._load_unit(value.unit_id)
            occupancy = {}
            for order_id in self._orders_at(value.unit_id):
                raw = self.occupancy_table.get(f"{value.unit_id}|{order_id}")
                if raw is not None:
                    occupancy[order_id] = OccupancyEntry.from_json(orjson.loads(raw))
            before = slot.version
            effects = self.units.on_status(
                slot, unit_status_fact(value), occupancy, from_ms(now_ms)
            )
            await self._apply_unit(slot, effects, store=slot.version != before)
        self.processed += 1

    async def _on_unit_inbox(self, event: Any) -> None:
        message = event.message
        body = orjson.loads(event.value)
        unit_id, order_id = body["u"], body["o"]
        raw = self.occupancy_table.get(f"{unit_id}|{order_id}")
        entry = None if raw is None else OccupancyEntry.from_json(orjson.loads(raw))
        slot = self._load_unit(unit_id)
        effects = self.units.on_occupancy(
            slot, body, entry, from_ms(self.clock.now(message.partition))
        )
        self._orders_at(unit_id).add(order_id)
        await self._apply_unit(slot, effects, store=False)

    # --- live clock ---------------------------------------------------------------

    async def _tick_due(self) -> None:
        """Ask each partition this worker owns to fire its deadlines that fell due."""
        now_ms = self.clock.now(-1)
        inbox = self.order_inbox.get_topic_name()
        for tp in self.app.assignor.assigned_actives():
            if tp.topic != inbox or tp.partition in self._ticks_in_flight:
                continue
            due = self.deadlines.next_due(tp.partition)
            if due is not None and due <= now_ms:
                self._ticks_in_flight.add(tp.partition)
                await self.order_inbox.send(
                    key=None, value=_json({"k": "tick", "t": now_ms}), partition=tp.partition
                )

    # --- recovery -----------------------------------------------------------------

    async def _on_orders_recovered(self) -> None:
        """Rebuild the deadline index and clocks, and announce owned alerts again.

        Runs under the agents' lock, so a re-announcement never overtakes a
        newer version sent by an agent.
        """
        async with self._turn:
            await self._recover_orders()

    async def _recover_orders(self) -> None:
        self.deadlines.clear()
        self._ticks_in_flight.clear()
        announced = 0
        scans = self.scans_topic.get_topic_name()
        active = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == scans}
        for order_id, raw in list(self.order_table.items()):
            data = orjson.loads(raw)
            partition = data["p"]
            if partition not in active:
                continue  # a standby copy: its owner announces it
            if data["nd"] is not None:
                self.deadlines.push(partition, data["nd"], order_id)
            self.clock.observe(partition, data.get("t"))
            for alert in data["a"].values():
                await self.alerts_topic.send(key=alert["alert_id"].encode(), value=_json(alert))
                announced += 1
        log.info("orders_recovered", alerts_announced=announced)

    async def _on_units_recovered(self) -> None:
        async with self._turn:
            await self._recover_units()

    async def _recover_units(self) -> None:
        units = self.unit_status_topic.get_topic_name()
        mine = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == units}
        for unit_id, raw in list(self.unit_table.items()):
            if self._partition_of(unit_id) not in mine:
                continue
            for alert in orjson.loads(raw)["a"].values():
                await self.alerts_topic.send(key=alert["alert_id"].encode(), value=_json(alert))

    def _partition_of(self, key: str) -> int:
        """The partition of a key under the default (murmur2) partitioner of every producer."""
        from kafka.partitioner.default import murmur2

        partitions = self.app.conf.topic_partitions
        return int(murmur2(key.encode()) & 0x7FFFFFFF) % int(partitions)

    async def _on_subscriptions_recovered(self) -> None:
        self._on_subscriptions_recovered_sync()

    def _on_subscriptions_recovered_sync(self) -> None:
        index: dict[str, set[str]] = {}
        for key in list(self.subscription_table.keys()):
            customer_id, _, order_id = str(key).partition("|")
            index.setdefault(customer_id, set()).add(order_id)
        self._subscribers = index

    async def _on_occupancy_recovered(self) -> None:
        self._on_occupancy_recovered_sync()

    def _on_occupancy_recovered_sync(self) -> None:
        index: dict[str, set[str]] = {}
        for key in list(self.occupancy_table.keys()):
            unit_id, _, order_id = str(key).partition("|")
            index.setdefault(unit_id, set()).add(order_id)
        self._unit_orders = index


def _as_rejected(value: Any) -> Rejected:
    if isinstance(value, Rejected):
        return value
    from schemas.dead_letter import ErrorDetail, ReasonCode

    return Rejected(
        None,
        ReasonCode.NOT_OBJECT,
        [ErrorDetail(loc="", msg="value is null", type="null_value")],
    )


def register_engine(app: faust.App, config: EngineConfig) -> Engine:
    return Engine(app, config)
