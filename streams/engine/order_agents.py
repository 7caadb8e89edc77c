"""The order side of the engine: scans, order records and join answers per order.

Each input loads the order's slot, hands it to `OrderProcessor`, writes the slot
back and sends the effects. The order side also owns the clock: deadlines fall
due per partition (event time: with the inputs; live: ticks from a timer).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

from chainwatch.logs import get_logger
from schemas.dead_letter import DeadLetterSource, ReasonCode
from schemas.orders import OrderRecord
from schemas.scans import ScanEvent
from streams.engine.messages import CustomerAnswer, Tick, decode_order_inbox
from streams.engine.order_processor import Effects, OrderProcessor, ScanGate
from streams.engine.order_slot import OrderSlot, decode_slot, evicted_json, peek
from streams.engine.runtime import EngineRuntime, as_rejected
from streams.rules.facts import from_ms, to_ms
from streams.topics import ORDERS, SCANS

log = get_logger(__name__)

GATES = 64
"""Scan gates kept (the most recently used orders): one per hot full or closed order."""


class OrderAgents:
    def __init__(self, rt: EngineRuntime) -> None:
        self.rt = rt
        self.orders = OrderProcessor(
            rt.plan, snapshots=rt.config.snapshots, limits=rt.config.limits
        )
        self.ticks_in_flight: set[int] = set()
        self.gates: OrderedDict[str, tuple[bytes, ScanGate]] = OrderedDict()
        """order_id -> (the stored value, the scan gate taken of it).

        A full order refuses every new scan, but deciding so from its slot means
        decoding up to 300 scans per record (milliseconds): the gate decides it
        from the stored value alone. It is used only while the table holds the
        very value it was taken of, so it is never stale.
        """

    # --- store and send -------------------------------------------------------------

    async def apply(self, slot: OrderSlot, effects: Effects) -> None:
        """Store an order's slot, then send its effects (see streams.engine.agents).

        The slot is written before the first `await`: agents of one worker share
        the tables, and another agent must never read a slot older than the one
        whose effects are being sent.
        """
        rt = self.rt
        order_id = slot.facts.order_id
        if effects.evicted:
            rt.order_table[order_id] = rt.encoded(evicted_json(slot))
        elif effects.changed:
            rt.order_table[order_id] = rt.encoded(slot.to_json())
            if slot.next_deadline_ms is not None:
                rt.deadlines.push(slot.partition, slot.next_deadline_ms, order_id)
        await rt.send_alerts(effects.alerts)
        if effects.snapshot is not None:
            await rt.state_topic.send(key=order_id.encode(), value=effects.snapshot)
        await rt.send_dead_letters(effects.dead_letters)
        for sub in effects.subscriptions:
            await rt.customer_inbox.send(key=sub.key(), value=sub.encode())
        for occ in effects.occupancy:
            await rt.unit_inbox.send(key=occ.key(), value=occ.encode())

    async def fire_due(self, partition: int, now_ms: int) -> None:
        """Re-derive (or evict) the orders of `partition` whose next deadline has come."""
        rt = self.rt
        now = from_ms(now_ms)
        for due_ms, order_id in list(rt.deadlines.pop_due(partition, now_ms)):
            raw = rt.order_table.get(order_id)
            if raw is None:
                continue
            stored, data = peek(raw)
            if stored.evicted or stored.next_deadline_ms != due_ms:
                continue  # stale entry: the order moved on since it was indexed
            slot = OrderSlot.from_json(data)
            await self.apply(slot, self.orders.on_clock(slot, now))

    # --- inputs -----------------------------------------------------------------------

    async def on_scan(self, event: Any) -> None:
        message, value = event.message, event.value
        if not isinstance(value, ScanEvent):
            await self.rt.dead_letter(SCANS, message, as_rejected(value))
        elif not await self.rt.mis_keyed(SCANS, message, value):
            await self._take(SCANS, message, value.order_id, to_ms(value.event_time), value)
        self.rt.processed += 1

    async def on_order_record(self, event: Any) -> None:
        message, value = event.message, event.value
        if not isinstance(value, OrderRecord):
            await self.rt.dead_letter(ORDERS, message, as_rejected(value))
        elif not await self.rt.mis_keyed(ORDERS, message, value):
            event_time = value.event_time or value.placed_at
            at = None if event_time is None else to_ms(event_time)
            await self._take(ORDERS, message, value.order_id, at, value)
        self.rt.processed += 1

    async def _take(
        self,
        topic: str,
        message: Any,
        order_id: str,
        event_ms: int | None,
        record: ScanEvent | OrderRecord,
    ) -> None:
        rt = self.rt
        now_ms = rt.clock.observe(message.partition, event_ms)
        now = from_ms(now_ms)
        source: DeadLetterSource = rt.source(topic, message)
        raw = rt.order_table.get(order_id)
        if isinstance(record, ScanEvent) and raw is not None:
            refused = self._gated(order_id, raw, record, source, message.value, now)
            if refused is not None:
                await rt.send_dead_letters(refused.dead_letters)
                await self.fire_due(message.partition, now_ms)
                return
        slot = decode_slot(order_id, raw)
        if slot is None:  # evicted: the order closed longer ago than the retention
            refused = self.orders.refuse(
                order_id, ReasonCode.ORDER_CLOSED, source, message.value, now
            )
            await rt.send_dead_letters(refused.dead_letters)
        else:
            slot.partition = message.partition
            if isinstance(record, ScanEvent) and raw is not None:
                self._remember_gate(order_id, raw, slot)
            if isinstance(record, ScanEvent):
                effects = self.orders.on_scan(slot, record, source, message.value, now)
            else:
                effects = self.orders.on_order_record(slot, record, source, message.value, now)
            await self.apply(slot, effects)
        await self.fire_due(message.partition, now_ms)

    def _gated(
        self, order_id: str, raw: bytes, scan: ScanEvent, source: DeadLetterSource,
        value: bytes, now: datetime,
    ) -> Effects | None:  # fmt: skip
        """The refusal of `scan` decided by the order's gate, if it has a valid one."""
        held = self.gates.get(order_id)
        if held is None or (held[0] is not raw and held[0] != raw):
            return None
        self.gates.move_to_end(order_id)
        return self.orders.refused_scan(held[1], scan, source, value, now)

    def _remember_gate(self, order_id: str, raw: bytes, slot: OrderSlot) -> None:
        """Take the gate of `slot` (just decoded from `raw`, not yet changed)."""
        gate = self.orders.scan_gate(slot)
        if gate is None:
            self.gates.pop(order_id, None)
            return
        self.gates[order_id] = (raw, gate)
        self.gates.move_to_end(order_id)
        while len(self.gates) > GATES:
            self.gates.popitem(last=False)

    async def on_inbox(self, event: Any) -> None:
        """Join answers (customer, downtimes) and clock ticks."""
        rt = self.rt
        partition = event.message.partition
        message = decode_order_inbox(event.value)
        if isinstance(message, Tick):
            self.ticks_in_flight.discard(partition)
            await self.fire_due(partition, rt.clock.observe(partition, message.t_ms))
            return
        slot = decode_slot(message.order_id, rt.order_table.get(message.order_id))
        if slot is None:
            return  # the order left the state: a late join answer changes nothing
        slot.partition = partition
        now = from_ms(rt.clock.now(partition))
        if isinstance(message, CustomerAnswer):
            effects = self.orders.on_customer(slot, message, now)
        else:
            effects = self.orders.on_downtimes(slot, message, now)
        if effects.changed:
            await self.apply(slot, effects)

    # --- live clock ---------------------------------------------------------------

    async def tick_due(self) -> None:
        """Ask each partition this worker owns to fire its deadlines that fell due."""
        rt = self.rt
        now_ms = rt.clock.now(-1)
        for partition in sorted(rt.active_partitions(rt.order_inbox)):
            if partition in self.ticks_in_flight:
                continue
            due = rt.deadlines.next_due(partition)
            if due is not None and due <= now_ms:
                self.ticks_in_flight.add(partition)
                await rt.order_inbox.send(
                    key=None, value=Tick(now_ms).encode(), partition=partition
                )

    # --- recovery -----------------------------------------------------------------

    async def on_recovered(self) -> None:
        """Rebuild the deadline index and clocks, and announce owned alerts again.

        Runs under the agents' lock, so a re-announcement never overtakes a
        newer version sent by an agent.
        """
        rt = self.rt
        async with rt.turn:
            rt.deadlines.clear()
            self.ticks_in_flight.clear()
            announced = 0
            active = rt.active_partitions(rt.scans_topic)
            for order_id, raw in list(rt.order_table.items()):
                stored, _ = peek(raw)
                if stored.partition not in active or stored.evicted:
                    continue  # a standby copy (its owner announces it), or an evicted order
                if stored.next_deadline_ms is not None:
                    rt.deadlines.push(stored.partition, stored.next_deadline_ms, order_id)
                rt.clock.observe(stored.partition, stored.clock_ms)
                await rt.send_alerts(stored.published.values(), reannounce=True)
                announced += len(stored.published)
            log.info("orders_recovered", alerts_announced=announced)
