"""The order side of the engine: scans, order records and join answers per order.

Each input loads the order's slot, hands it to `OrderProcessor`, writes the slot
back and sends the effects. The order side also owns the clock: deadlines fall
due per partition (event time: with the inputs; live: ticks from a timer). On
the event clock the derivation an input causes may be owed for a while, and
the deadlines that fall due wait with it (`settle`): a replay derives an order
once per backlog, not once per batch and again for every deadline it passed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from faust.streams import current_event

from schemas.dead_letter import DeadLetter, ErrorDetail, ReasonCode
from schemas.orders import OrderRecord
from schemas.scans import ScanEvent
from streams.engine.clock import appended_ms
from streams.engine.errors import error_text
from streams.engine.messages import (
    ORDER_INBOX,
    CustomerAnswer,
    DowntimeAnswer,
    Tick,
    decode_order_inbox,
    encode_bundle,
)
from streams.engine.order_processor import (
    Arrival,
    Effects,
    OrderProcessor,
    Received,
    RecordPosition,
    ScanGate,
)
from streams.engine.order_slot import OrderSlot, Stored, decode_slot, evicted_json, peek
from streams.engine.runtime import RECOVERY_FLUSH_EVERY, EngineRuntime, as_rejected
from streams.rules.facts import from_ms, to_ms
from streams.topics import ORDERS, SCANS

log = structlog.stdlib.get_logger(__name__)

GATES = 64
"""Scan gates kept (the most recently used orders): one per hot full or closed order."""

HOLD_MOST_S = 600.0
"""`_catch_up`: the longest a worker's clock is held behind a backlog. Deadlines of
partitions with nothing to read wait while it is held; should the order side never
be seen read to its end, they would wait for good."""

OWED_MOST = 20_000
"""Orders that may owe a derivation at once before a step makes them all (bounds the
sources kept in memory for them, and how far a long backlog defers its alerts)."""


class OrderAgents:
    def __init__(self, rt: EngineRuntime) -> None:
        self.rt = rt
        self.orders = OrderProcessor(
            rt.plan, snapshots=rt.config.snapshots, limits=rt.config.limits
        )
        self.defer = rt.config.defer_derivations
        self.owed: dict[str, int] = {}
        """order_id -> partition of the orders that owe a derivation (`defer`)."""
        self.received: dict[str, Received] = {}
        """The sources of the records those derivations cover (for their dead letters)."""
        self.acting: dict[int, Any] = {}
        """partition -> an event of it: what a table write of that partition acts for."""
        self.ticks_in_flight: set[int] = set()
        self._codes: dict[str, str] | None = None
        self.gates: OrderedDict[str, tuple[bytes, ScanGate]] = OrderedDict()
        """order_id -> (the stored value, the scan gate taken of it).

        A full order refuses every new scan, but deciding so from its slot means
        decoding up to 300 scans per record (milliseconds): the gate decides it
        from the stored value alone. It is used only while the table holds the
        very value it was taken of, so it is never stale.
        """

    # --- store and send -------------------------------------------------------------

    def apply(self, slot: OrderSlot, effects: Effects, *, read_in_step: bool = True) -> None:
        """Store an order's slot, then send its effects (see streams.engine.agents).

        The slot is written before the first `await`: agents of one worker share
        the tables, and another agent must never read a slot older than the one
        whose effects are being sent. `read_in_step` False: the effects come from a
        deadline or an owed derivation, whose step may have read nothing of the
        order's partition (`_acting_position`).
        """
        rt = self.rt
        order_id = slot.facts.order_id
        if effects.snapshot is not None:
            slot.snapshot_at = self._acting_position(after=not read_in_step)
        if effects.evicted:
            rt.put(rt.order_table, order_id, rt.encoded(evicted_json(slot)))
            rt.deadlines.schedule(slot.partition, None, order_id)
        elif effects.changed:
            rt.put(rt.order_table, order_id, rt.encoded(slot.to_json()))
            # (a join answer stored, not derived yet, keeps a replanned order due now)
            due = self._scheduled_at(slot.plan, slot.next_deadline_ms, slot.partition)
            rt.deadlines.schedule(slot.partition, due, order_id)
        rt.send_alerts(effects.alerts)
        out = rt.out
        if effects.snapshot is not None:
            rt.outputs.add(out.state, order_id.encode(), effects.snapshot)
        rt.send_dead_letters(effects.dead_letters)
        for sub in effects.subscriptions:
            rt.join(out.customer_inbox, sub)
        for occ in effects.occupancy:
            rt.join(out.unit_inbox, occ)

    @property
    def codes(self) -> dict[str, str]:
        """The order side's input topics (real names) -> their code in `snapshot_at`."""
        if self._codes is None:
            rt = self.rt
            self._codes = {
                rt.scans_topic.get_topic_name(): "s",
                rt.orders_topic.get_topic_name(): "o",
                rt.order_inbox.get_topic_name(): "i",
            }
        return self._codes

    def _acting_position(self, *, after: bool = False) -> list[Any] | None:
        """[topic code, offset] of the input the current step acts for (`acting_for`):
        a snapshot so marked was delivered once an offset past it is committed.

        `after`: the step may have read nothing of the event's partition (a deadline
        fired for it on the event clock, a derivation owed since recovery), so the
        event may be committed already, before the snapshot was sent; the mark is one
        past it, proved delivered only by a later input's commit. A lost snapshot is
        then published again at recovery; one that was delivered may be published
        again too while nothing later of that topic and partition is committed (the
        sink keeps the newest version: a repeat changes nothing)."""
        event = current_event()
        if event is None:
            return None
        message = event.message
        code = self.codes.get(message.topic)
        return None if code is None else [code, message.offset + after]

    async def fire_due(self, partition: int, now_ms: int) -> None:
        """Re-derive (or evict) the orders of `partition` whose next deadline has come.

        Runs with an event of `partition` as faust's current event (table writes).
        """
        rt = self.rt
        now = from_ms(now_ms)
        for due_ms, order_id in list(rt.deadlines.pop_due(partition, now_ms)):
            raw = rt.get(rt.order_table, order_id)
            if raw is None:
                continue
            stored, data = peek(raw)
            if stored.evicted:
                continue
            if stored.next_deadline_ms != due_ms and not self._replanned(stored.plan):
                continue  # stale entry: the order moved on since it was indexed
            self._fire(OrderSlot.from_json(data), now)
            if rt.outputs.pending >= RECOVERY_FLUSH_EVERY:
                # many at once (a plan change falls due for every order): not all their
                # outputs in memory, and the loop turns meanwhile
                await rt.outputs.flush()

    def _scheduled_at(
        self, plan: str | None, next_deadline_ms: int | None, partition: int
    ) -> int | None:
        """When an order is due: at once if another plan judged it, else its next deadline."""
        return self.rt.clock.now(partition) if self._replanned(plan) else next_deadline_ms

    def _replanned(self, plan: str | None) -> bool:
        """Whether an order last derived under `plan` was judged by another plan than
        this worker's (None: stored before slots named their plan; taken as this one)."""
        return plan is not None and plan != self.orders.plan_fingerprint

    def _fire(self, slot: OrderSlot, now: datetime) -> Effects:
        """Fire a deadline of `slot` that fell due (with the derivation it owes, if any),
        store the slot and send the effects."""
        order_id = slot.facts.order_id
        effects = self.orders.on_clock(slot, now, self.received.pop(order_id, None))
        self.apply(slot, effects, read_in_step=False)
        self.owed.pop(order_id, None)
        return effects

    # --- deferred derivations (event clock) --------------------------------------------

    def _note(self, slot: OrderSlot, received: Received, event: Any) -> None:
        """Remember whether the order owes a derivation after a step took it."""
        order_id = slot.facts.order_id
        if slot.pending_ms is None:
            self.owed.pop(order_id, None)
            self.received.pop(order_id, None)
            return
        self.owed[order_id] = slot.partition
        if received:
            self.received[order_id] = received
        self.acting[slot.partition] = event

    def _derivation_failed(self, order_id: str, received: Received | None, exc: Exception) -> None:
        """An owed derivation raised. Its records are stored (the steps that took them
        ended well), so each one whose source is still known is dead-lettered with
        `processing_error`, as a record whose own step raises is (CONTRACT v1.2), and
        the order is not retried at every step; its slot still owes the derivation, so
        its next record or deadline tries again."""
        error = error_text(exc)
        log.error("owed_derivation_failed", order_id=order_id, error=error, exc_info=exc)
        detail = ErrorDetail(loc="", msg=error, type=type(exc).__name__)
        now = datetime.now(UTC)
        held = [] if received is None else [*received.scans.values(), *received.records.values()]
        code, key = ReasonCode.PROCESSING_ERROR, order_id.encode()
        self.rt.send_dead_letters(
            DeadLetter.build(raw, position.source(), [detail], code, now, key=key)
            for position, raw in held
        )

    async def settle(self) -> None:
        """Fire the deadlines that fell due and make the derivations owed, unless
        more order records are on their way (`EngineRuntime.backlog`) and fewer than
        `OWED_MOST` orders owe one.

        Runs at the end of every order step. A worker that defers derivations
        (event clock) derives an order once for all the batches its records came
        in while a backlog lasted, not once per batch: a replay's event-time window
        reaches a worker as a backlog, so its orders are derived about once per
        window. Nothing waits on that: a step that ends with no record waiting for
        its agent makes every owed derivation before its records are acked, so a
        worker whose inputs are all committed owes none (a replay's window has
        drained only then). A worker stopped before owes them in the table
        (`OrderSlot.pending_ms`); recovery takes them up again. The outputs of
        thousands of derivations are sent on the way (`RECOVERY_FLUSH_EVERY`),
        before the step's inputs are acked as ever.

        The deadlines wait with the derivations (event clock). A replay reads its
        topics at their own pace, so a partition's clock passes deadlines whose
        fulfilling scans are still on their way: fired then, such a deadline sent
        an alert and its retraction and derived the order once more. Fired here, at
        the partition's clock, an order that also owes one is derived once
        (`OrderProcessor.on_clock`). Alerts are a function of the facts and the
        clock, so they end where firing each deadline on the way would; what a
        deadline decides while applying a record (an eviction, hence `order_closed`)
        is decided there from the record's clock (`on_inputs`), and before a join
        answer by firing that order's deadline first (`_answers`).
        """
        rt = self.rt
        if (self.defer or self.owed) and len(self.owed) < OWED_MOST and rt.backlog():
            return  # more records on their way (live: only orders owing since recovery)
        if self.defer:
            for partition in sorted(self.acting):
                with rt.acting_for(self.acting[partition]):
                    await self.fire_due(partition, rt.clock.now(partition))
        if not self.owed:
            return
        # (a fire_due below may derive an owed order too: it is dropped from `owed`)
        partitions: set[int] = set()
        for order_id, partition in list(self.owed.items()):
            event = self.acting.get(partition)
            if event is None:  # owed since recovery, no record of its partition yet
                continue
            received = self.received.pop(order_id, None)
            try:
                with rt.acting_for(event):
                    slot = decode_slot(order_id, rt.get(rt.order_table, order_id))
                    if slot is not None and slot.pending_ms is not None:
                        slot.partition = partition
                        self.apply(
                            slot, self.orders.derive_owed(slot, received), read_in_step=False
                        )
                        partitions.add(partition)
            except Exception as exc:  # never raises out of a step: the records are stored
                self._derivation_failed(order_id, received, exc)
            self.owed.pop(order_id, None)
            if rt.outputs.pending >= RECOVERY_FLUSH_EVERY:
                await rt.outputs.flush()  # thousands owed: not all their outputs in memory
        for partition in sorted(partitions):
            with rt.acting_for(self.acting[partition]):
                await self.fire_due(partition, rt.clock.now(partition))

    # --- inputs -----------------------------------------------------------------------

    async def on_scans(self, events: Sequence[Any]) -> None:
        await self._records(SCANS, events)

    async def on_order_records(self, events: Sequence[Any]) -> None:
        await self._records(ORDERS, events)

    async def _records(self, topic: str, events: Sequence[Any]) -> None:
        """A batch of scans or order records: grouped per order, each order taken once.

        Every record is observed by its partition's clock in arrival order (the
        clock each one would have been evaluated at alone); then each order's
        records are applied in offset order and the order derived once
        (`OrderProcessor.on_inputs`); then each partition's deadlines fire once
        (live clock; on the event clock when the backlog ends: `settle`).
        """
        rt = self.rt
        kind = ScanEvent if topic == SCANS else OrderRecord
        groups: dict[str, list[tuple[Any, Arrival]]] = {}
        last: dict[int, Any] = {}
        for event in events:
            message, value = event.message, event.value
            if not isinstance(value, kind):
                rt.dead_letter(topic, message, as_rejected(value))
            elif not rt.diverted(topic, message, value):
                assert isinstance(value, ScanEvent | OrderRecord)
                if rt.clock.holding:  # catching up: the clock is where the inputs are read to
                    rt.clock.read_to(message.partition, topic, appended_ms(message))
                before_ms = rt.clock.now(message.partition)
                event_time = value.event_time if isinstance(value, ScanEvent) else (
                    value.event_time or value.placed_at
                )  # fmt: skip
                at = None if event_time is None else to_ms(event_time)
                now_ms = rt.clock.observe(message.partition, at)
                position = RecordPosition(topic, message.partition, message.offset)
                arrival = Arrival(value, from_ms(now_ms), position, message.value, before_ms)
                groups.setdefault(value.order_id, []).append((event, arrival))
            last[message.partition] = event
        self.acting.update(last)
        for items in groups.values():
            await rt.guarded(topic, items, self._take, lambda item: item[0].message)
        if not self.defer:
            for partition, event in last.items():
                with rt.acting_for(event):
                    await self.fire_due(partition, rt.clock.now(partition))
        await self.settle()

    async def _take(self, items: Sequence[tuple[Any, Arrival]]) -> None:
        """One order's records of a batch: load the slot once, apply, store once, send.

        The scans a full or closed order refuses from its gate (see `gates`) need no
        slot: when every scan of the batch is refused so, the slot is not decoded.
        """
        rt = self.rt
        event, first = items[-1][0], items[0][1]
        assert isinstance(first.item, ScanEvent | OrderRecord)
        order_id = first.item.order_id
        scans = isinstance(first.item, ScanEvent)
        arrivals = [a for _, a in items]
        with rt.acting_for(event):
            raw = rt.get(rt.order_table, order_id)
            if scans and raw is not None:
                refused, arrivals = self._gated(order_id, raw, arrivals)
                rt.send_dead_letters(refused)
                if not arrivals:
                    return
            slot = decode_slot(order_id, raw)
            if slot is None:  # evicted: the order closed longer ago than the retention
                for arrival in arrivals:
                    assert arrival.position is not None
                    letters = self.orders.refuse(
                        order_id, ReasonCode.ORDER_CLOSED, arrival.position, arrival.raw,
                        arrival.now,
                    ).dead_letters  # fmt: skip
                    rt.send_dead_letters(letters)
                return
            slot.partition = event.message.partition
            if scans and raw is not None:
                self._remember_gate(order_id, raw, slot)
            received = self.received.get(order_id) or Received()
            self.apply(slot, self.orders.on_inputs(slot, arrivals, defer=self.defer,
                                                   received=received))  # fmt: skip
            self._note(slot, received, event)

    def _gated(
        self, order_id: str, raw: bytes, arrivals: list[Arrival]
    ) -> tuple[list[DeadLetter], list[Arrival]]:
        """The dead letters of the leading scans the order's gate refuses, and the rest.

        The gate holds while the stored value is the one it was taken of; the first
        scan it cannot decide, or that arrives after the clock passed the closed
        order's eviction instant (the per-record engine evicted the order before
        it), and every scan after it go to `OrderProcessor.on_inputs` with the slot.
        """
        held = self.gates.get(order_id)
        if held is None or (held[0] is not raw and held[0] != raw):
            return [], arrivals
        self.gates.move_to_end(order_id)
        gate = held[1]
        letters: list[DeadLetter] = []
        for i, arrival in enumerate(arrivals):
            scan, before = arrival.item, arrival.clock_before_ms
            assert isinstance(scan, ScanEvent)
            assert arrival.position is not None
            assert arrival.raw is not None
            if gate.evict_at_ms is not None and before is not None and before >= gate.evict_at_ms:
                return letters, arrivals[i:]
            refused = self.orders.refused_scan(
                gate, scan, arrival.position, arrival.raw, arrival.now
            )
            if refused is None:
                return letters, arrivals[i:]
            letters.extend(refused.dead_letters)
        return letters, []

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

    async def on_inbox(self, events: Sequence[Any]) -> None:
        """Join answers (customer, downtimes) and clock ticks, grouped per order.

        Each event is a bundle (streams.engine.messages), its messages in send order.
        Each answer takes its partition's clock where it arrived (after the ticks
        before it); each order's answers are applied in order and the order derived
        at most once; ticks fire their partition's deadlines once, after the answers.
        """
        rt = self.rt
        groups: dict[str, list[tuple[Any, Arrival]]] = {}
        ticked: dict[int, Any] = {}
        for event, message in await rt.unbundled(ORDER_INBOX, events, decode_order_inbox):
            partition = event.message.partition
            self.acting[partition] = event
            if isinstance(message, Tick):
                self.ticks_in_flight.discard(partition)
                rt.clock.observe(partition, message.t_ms)
                ticked[partition] = event
                continue
            now = from_ms(rt.clock.now(partition))
            groups.setdefault(message.order_id, []).append((event, Arrival(message, now)))
        for items in groups.values():
            await rt.guarded(ORDER_INBOX, items, self._answers, lambda item: item[0].message)
        if not self.defer:
            for partition, event in ticked.items():
                with rt.acting_for(event):
                    await self.fire_due(partition, rt.clock.now(partition))
        await self.settle()

    async def _answers(self, items: Sequence[tuple[Any, Arrival]]) -> None:
        rt = self.rt
        event, first = items[-1][0], items[0][1]
        assert isinstance(first.item, CustomerAnswer | DowntimeAnswer)
        order_id = first.item.order_id
        with rt.acting_for(event):
            slot = decode_slot(order_id, rt.get(rt.order_table, order_id))
            if slot is None:
                return  # the order left the state: a late join answer changes nothing
            slot.partition = event.message.partition
            if self.defer and self._due(slot):
                # its deadline fell due before this answer (deferred to `settle`): fired
                # now, as the per-record engine did, for an eviction it may make
                fired = self._fire(slot, from_ms(rt.clock.now(slot.partition)))
                if fired.evicted:
                    return
            received = self.received.get(order_id) or Received()
            effects = self.orders.on_inputs(
                slot, [a for _, a in items], defer=self.defer, received=received
            )
            if effects.changed:
                self.apply(slot, effects)
            self._note(slot, received, event)

    def _due(self, slot: OrderSlot) -> bool:
        """Whether a deadline of `slot` that may evict it fell due on its partition's clock."""
        due, now_ms = slot.next_deadline_ms, self.rt.clock.now(slot.partition)
        return due is not None and due <= now_ms and self.orders.may_leave(slot, now_ms)

    # --- live clock ---------------------------------------------------------------

    async def tick_due(self) -> None:
        """Ask each partition this worker owns to fire its deadlines that fell due.

        A tick is sent at once (a bundle of one; a timer has no step to flush), not
        under the agents' lock: on its partition it lands before or after a step's
        whole bundle, never inside one. Either order is what a tick racing the
        answers always was: the answers after it take the clock it moved, and the
        deadlines fire once per batch after its answers.
        """
        rt = self.rt
        if rt.clock.holding:
            self._catch_up()
        for partition in sorted(rt.active_partitions(rt.order_inbox)):
            if partition in self.ticks_in_flight:
                continue
            now_ms = rt.clock.now(partition)
            due = rt.deadlines.next_due(partition)
            if due is not None and due <= now_ms:
                self.ticks_in_flight.add(partition)
                tick = encode_bundle([Tick(now_ms).encode()])
                await rt.outputs.send(rt.out.order_inbox, None, tick, partition)

    def _catch_up(self) -> None:
        """Give a held partition's clock back to the wall once its scans and order
        records are read to their end (`EngineRuntime.order_side_read_to_end`): each
        of them holds the clock back no more once read so. (Its inbox brings join
        answers and ticks, which change no deadline's outcome.)"""
        rt = self.rt
        ends = rt.order_side_read_to_end()
        for partition in rt.clock.held():
            if rt.clock.held_s(partition) > HOLD_MOST_S:
                held_s = rt.clock.release(partition)
                log.warning(
                    "clock_released_behind_backlog", partition=partition,
                    clock_held_s=round(held_s, 1),
                    note="its deadlines are judged at the wall clock again before every "
                    "waiting record is read: a breach may be retracted when its scan is read",
                )  # fmt: skip
                continue
            held_topics = rt.clock.held_topics  # released once these are read to their end
            done = [topic for topic in held_topics if (topic, partition) in ends]
            for topic in done:
                rt.clock.read_to_end(partition, topic)
            if len(done) == len(held_topics):
                held_s = rt.clock.release(partition)
                log.info("caught_up", partition=partition, clock_held_s=round(held_s, 1))

    # --- recovery -----------------------------------------------------------------

    async def on_recovered(self) -> None:
        """Rebuild the deadline index and clocks, and announce owned alerts again, and
        the snapshots whose delivery is not known (`_unsent_snapshots`).

        Runs under the agents' lock, so a re-announcement never overtakes a
        newer version sent by an agent.
        """
        rt = self.rt
        async with rt.turn:
            rt.deadlines.clear()
            self.ticks_in_flight.clear()
            self.owed.clear()  # the table says which orders owe one (their partition's
            self.received.clear()  # owner derives them); sources do not survive a move
            self.acting.clear()
            announced = replanned = 0
            active = rt.active_partitions(rt.scans_topic)
            # live: every partition is held until what waits in Kafka for it is read
            # (`_catch_up`; one it kept is read at once, unless records piled up while
            # the recovery paused it); a hold that goes on keeps its start
            rt.clock.forget(active)
            rt.clock.hold(active)
            unsent: Callable[[Stored], bool] | None = None
            snapshots = 0
            for order_id, raw in list(rt.order_table.items()):
                stored, data = peek(raw)
                if stored.partition not in active or stored.evicted:
                    continue  # a standby copy (its owner announces it), or an evicted order
                if stored.snapshot_at is not None and unsent is None:
                    # asked once, and only of a table that holds a snapshot's mark (not
                    # at a first start, nor in a replay's fresh run)
                    unsent = await self._unsent_snapshots(active)
                if unsent is not None and unsent(stored):
                    snapshot = self.orders.snapshot(OrderSlot.from_json(data))
                    if snapshot is not None:
                        rt.outputs.add(rt.out.state, order_id.encode(), snapshot)
                        snapshots += 1
                rt.clock.observe(stored.partition, stored.clock_ms)
                rt.clock.floor(stored.partition, stored.clock_ms)
                # judged by another plan: derived at the partition's next deadline check,
                # not at its next record or at the old plan's deadline
                replanned += self._replanned(stored.plan)
                due = self._scheduled_at(stored.plan, stored.next_deadline_ms, stored.partition)
                rt.deadlines.schedule(stored.partition, due, order_id)
                if stored.pending:
                    self.owed[order_id] = stored.partition
                rt.send_alerts(stored.published.values(), reannounce=True)
                announced += len(stored.published)
                if rt.outputs.pending >= RECOVERY_FLUSH_EVERY:
                    await rt.outputs.flush()
            await rt.outputs.flush()
            log.info(
                "orders_recovered", alerts_announced=announced,
                snapshots_announced=snapshots, replanned=replanned, clock_held=rt.clock.held(),
            )  # fmt: skip

    async def _unsent_snapshots(self, active: set[int]) -> Callable[[Stored], bool]:
        """Which stored orders' last snapshot may not have reached Kafka.

        A snapshot is sent in the step of the input it names (`OrderSlot.snapshot_at`),
        and faust commits that input only after Kafka acknowledged every output of
        the step. Past the committed offset of its partition (or with none), the
        snapshot may have been refused or lost while the step's changelog record was
        delivered: the table then holds the step's state, the input read again
        changes nothing, and only this recovery can publish the snapshot. Committed
        offsets unknown (no Kafka consumer, the lookup failed): every order that
        ever sent one (consumers keep the latest per order_id).
        """
        rt = self.rt
        names = {code: name for name, code in self.codes.items()}
        committed = await rt.committed_offsets(
            [(name, partition) for name in names.values() for partition in sorted(active)]
        )

        def unsent(stored: Stored) -> bool:
            if stored.snapshot_at is None:
                return False
            if committed is None:
                return True
            code, offset = stored.snapshot_at
            done = committed.get((names.get(code, ""), stored.partition))
            return done is None or offset >= done

        return unsent
