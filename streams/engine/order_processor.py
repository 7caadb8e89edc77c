"""What happens to one order when something arrives for it (pure, no Kafka).

Every entry point mutates the order's slot and returns the `Effects` to
publish. The agents stay thin: read the slot, call one function, write the
slot, send the effects. Alerts are always re-derived from the facts
(`streams.rules.evaluate_order`) and only the difference from what was
published before is emitted, so redelivering an input is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

from schemas.alerts import AlertType
from schemas.dead_letter import DeadLetter, DeadLetterSource, ErrorDetail, ReasonCode
from schemas.orders import OrderRecord
from schemas.plan import SlaPlan
from schemas.scans import ScanEvent
from streams.engine.limits import EngineLimits
from streams.engine.messages import CustomerAnswer, DowntimeAnswer, Occupancy, Subscription
from streams.engine.order_slot import OrderSlot, downtime_from_json
from streams.rules.diff import alert_changes
from streams.rules.evaluate import evaluate_order, occupancy_spans
from streams.rules.facts import (
    format_utc_cached,
    from_ms,
    has_scan,
    to_ms,
)
from streams.rules.order_record import fold_records, refusal
from streams.rules.record_facts import order_record_fact, scan_fact
from streams.rules.visits import Visit
from streams.topics import ORDERS, SCANS


@dataclass(slots=True)
class Effects:
    """What one input makes the engine publish, in this order."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    snapshot: bytes | None = None
    """The order-state record (CONTRACT.md "Order state") as JSON bytes."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    occupancy: list[Occupancy] = field(default_factory=list)
    changed: bool = False
    """False when the input was a no-op (a known event_id, a stale answer)."""
    evicted: bool = False
    """The order closed longer ago than the retention: its slot is to be removed."""


@dataclass(frozen=True, slots=True)
class ScanGate:
    """What deciding a refused scan needs of a full or closed order's slot.

    A pure function of the stored slot: valid as long as the stored value is
    the one it was taken of (see `OrderAgents`).
    """

    event_ids: frozenset[str]
    full: bool
    """The order holds `max_scans_per_order` scans."""
    evict_at_ms: int | None
    """When the closed order leaves the state (None while open)."""


class RecordPosition(NamedTuple):
    """Where a scan or order record was read: its dead letter's `source`, made only
    when a dead letter needs one (validating a `DeadLetterSource` for every input
    cost ~1 µs of the ~40 µs the pure order path spends on a record)."""

    topic: str
    partition: int
    offset: int

    def source(self) -> DeadLetterSource:
        return DeadLetterSource(
            kind="kafka", topic=self.topic, partition=self.partition, offset=self.offset
        )


@dataclass(slots=True)
class Arrival:
    """One input for an order as the agents take it from a batch (offset order per key).

    `now` is the engine's clock right after this input was observed (what the
    per-record engine would have evaluated at); `position` and `raw` name a scan
    or order record for its dead letters (None for join answers).
    """

    item: ScanEvent | OrderRecord | CustomerAnswer | DowntimeAnswer
    now: datetime
    position: RecordPosition | None = None
    raw: bytes | None = None
    clock_before_ms: int | None = None
    """The partition's clock before this input: the per-record engine fired the due
    deadlines (evictions included) at it before taking this input."""


@dataclass(slots=True)
class Received:
    """Where the records an order's owed derivation covers came from, and their bytes.

    A derivation may refuse a record after all (a scan off the order's route, an
    order record with a bad update): its dead letter carries the record's source
    and bytes when they are here. A worker that defers derivations keeps one per
    owed order in memory (not in the slot: bytes of up to hundreds of records);
    after a restart the dead letter names the record without them, as for a
    record refused by a later route change.
    """

    scans: dict[str, tuple[RecordPosition, bytes]] = field(default_factory=dict)
    records: dict[int, tuple[RecordPosition, bytes]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.scans or self.records)


class _Step(Enum):
    NOTHING = 0
    """A no-op (stale answer) or a refusal: the slot is not written."""
    STORE = 1
    """The slot changed without a change to what is derived: written, not evaluated."""
    EVALUATE = 2
    """A fact changed: the order is derived again."""


class OrderProcessor:
    """The rules applied to one order slot at a time, under one plan."""

    def __init__(
        self, plan: SlaPlan, *, snapshots: bool = True, limits: EngineLimits | None = None
    ) -> None:
        self.plan = plan
        self.plan_fingerprint = plan.fingerprint
        self.snapshots = snapshots
        self.limits = limits or EngineLimits()

    def evict_at_ms(self, slot: OrderSlot) -> int | None:
        """When a closed order leaves the state (None while it is open)."""
        if slot.closed_at_ms is None:
            return None
        return slot.closed_at_ms + self.limits.closed_order_retention_ms

    def _closed_before(self, slot: OrderSlot, at_ms: int) -> bool:
        evict_at = self.evict_at_ms(slot)
        return evict_at is not None and at_ms >= evict_at

    def refuse(
        self,
        order_id: str,
        code: ReasonCode,
        position: RecordPosition,
        raw: bytes | None,
        now: datetime,
    ) -> Effects:
        """A record the order can no longer take (`order_closed`, `state_limit`)."""
        if code is ReasonCode.ORDER_CLOSED:
            msg = "the order closed longer ago than the engine's retention"
        else:
            msg = "the order already holds the most records the engine keeps per order"
        letter = DeadLetter.build(
            raw, position.source(), [ErrorDetail(loc="order_id", msg=msg, type=code.value)],
            code, now, key=order_id.encode(),
        )  # fmt: skip
        return Effects(dead_letters=[letter])

    # --- inputs ---------------------------------------------------------------

    def scan_gate(self, slot: OrderSlot) -> ScanGate | None:
        """What `refused_scan` needs of `slot`, or None while the slot takes new scans.

        Only a full or closed order gets one: it is what lets the agents refuse
        the scans of a hot order without decoding its slot for each of them.
        """
        facts = slot.facts
        full = len(facts.scans) >= self.limits.max_scans_per_order
        if slot.pending_ms is not None or (not full and slot.closed_at_ms is None):
            return None  # owing a derivation, `closed_at_ms` may be behind the facts
        known = frozenset(scan.event_id for scan in facts.scans)
        return ScanGate(known, full, self.evict_at_ms(slot))

    def refused_scan(
        self, gate: ScanGate, scan: ScanEvent, position: RecordPosition, raw: bytes, now: datetime
    ) -> Effects | None:
        """`on_scan`'s effects when they are a refusal decided by `gate` alone, else None.

        The same checks in the same order as `on_scan`, so the refusal is the one
        `on_scan` would give on the slot the gate was taken of (a known event_id
        needs the slot: it re-announces the joins).
        """
        if scan.event_id in gate.event_ids:
            return None
        if gate.evict_at_ms is not None and to_ms(scan.event_time) >= gate.evict_at_ms:
            return self.refuse(scan.order_id, ReasonCode.ORDER_CLOSED, position, raw, now)
        if gate.full:
            return self.refuse(scan.order_id, ReasonCode.STATE_LIMIT, position, raw, now)
        return None

    def on_inputs(
        self,
        slot: OrderSlot,
        arrivals: Sequence[Arrival],
        *,
        defer: bool = False,
        received: Received | None = None,
    ) -> Effects:
        """Apply a batch of inputs for one order in order, then derive the order once.

        The result equals applying them one at a time, except that intermediate
        alert versions and snapshots are not published (CONTRACT v1.2: one snapshot
        per batch of changes; consumers keep the latest alert per `alert_id`). One
        thing a derivation decides is needed while applying: whether the order
        closed (a record past the eviction instant is refused). When a pending
        change could have closed the order early enough to refuse the next record,
        the order is derived before that record, as the per-record engine did.

        With `defer` the closing derivation is not made but owed (`slot.pending_ms`,
        `derive_owed`): an event-time replay derives an order once for many batches.
        A derivation owed from before is taken over: made here when the inputs need
        it (the closure check above), else at the end unless deferred again.
        `received` holds the sources of the records an owed derivation covers
        (updated in place).
        """
        effects = Effects()
        pending: datetime | None = None if slot.pending_ms is None else from_ms(slot.pending_ms)
        """The clock of the last input whose change awaits a derivation."""
        if received is None:
            received = Received()
        scans, records = received.scans, received.records
        earliest: list[int] = []  # the earliest fact's event time, computed on first need
        evicted = False
        record_ms = 0  # a scan's or order record's time (`_record_time`), in ms
        for arrival in arrivals:
            item = arrival.item
            if isinstance(item, _RECORDS):
                if evicted:
                    _merge(effects, self._closed(slot, arrival))
                    continue
                record_ms = to_ms(_record_time(item, arrival.now))  # once: `_take` reads it too
                at = max(record_ms, arrival.clock_before_ms or 0)
                if pending is not None and self._may_have_left(slot, at, earliest):
                    # the pending change may have closed the order long enough ago: derive now
                    _merge(effects, self._derive(slot, pending, received))
                    pending = None
                evict_at = self.evict_at_ms(slot)
                before = arrival.clock_before_ms
                if evict_at is not None and before is not None and before >= evict_at:
                    # the per-record engine evicted the order when the clock passed the instant
                    _merge(effects, self._evict(slot))
                    evicted = True
                    _merge(effects, self._closed(slot, arrival))
                    continue
            elif evicted:
                continue  # the order left the state: a late join answer changes nothing
            step = self._take(slot, arrival, effects, record_ms)
            if step is _Step.STORE:
                effects.changed = True
            elif step is _Step.EVALUATE:
                pending = arrival.now
                if isinstance(item, ScanEvent):
                    assert arrival.position is not None
                    assert arrival.raw is not None
                    scans[item.event_id] = (arrival.position, arrival.raw)
                elif isinstance(item, OrderRecord):
                    assert arrival.position is not None
                    assert arrival.raw is not None
                    records[arrival.position.offset] = (arrival.position, arrival.raw)
                if earliest and isinstance(item, _RECORDS):
                    earliest[0] = min(earliest[0], record_ms)
        if pending is not None:
            if defer:
                slot.pending_ms = to_ms(pending)
                effects.changed = True
            else:
                _merge(effects, self._derive(slot, pending, received))
        return effects

    def snapshot(self, slot: OrderSlot) -> bytes | None:
        """The snapshot of the stored slot, as its last derivation published it (same
        version, at the slot's clock); None when the engine publishes none. The slot
        is not changed (a recovery sends it again: consumers keep the latest)."""
        if not self.snapshots:
            return None
        facts = slot.facts
        fold = fold_records(facts.records, self.plan)
        customer_id = fold.record.customer_id if fold.record is not None else None
        customer = slot.customer if slot.customer_id == customer_id else None
        evaluation = evaluate_order(
            facts.order_id, facts, customer, slot.downtimes, self.plan,
            from_ms(slot.clock_ms), slot.version, fold=fold,
        )  # fmt: skip
        return orjson.dumps(evaluation.state_json(slot.version))

    def derive_owed(self, slot: OrderSlot, received: Received | None = None) -> Effects:
        """Make the derivation the slot owes (`on_inputs(defer=True)`), if any."""
        if slot.pending_ms is None:
            return Effects()
        return self._derive(slot, from_ms(slot.pending_ms), received or Received())

    def _derive(self, slot: OrderSlot, at: datetime, received: Received) -> Effects:
        """Derive at `at` what `received`'s records (emptied) and earlier changes owe."""
        slot.pending_ms = None
        effects = self._evaluate(
            slot, at, changed=True, scans=received.scans, records=received.records
        )
        received.scans.clear()  # in place: `on_inputs` holds them
        received.records.clear()
        return effects

    def _closed(self, slot: OrderSlot, arrival: Arrival) -> Effects:
        assert arrival.position is not None
        return self.refuse(
            slot.facts.order_id, ReasonCode.ORDER_CLOSED, arrival.position, arrival.raw, arrival.now
        )

    def may_leave(self, slot: OrderSlot, now_ms: int) -> bool:
        """Whether a deadline at `now_ms` could evict the order (`on_clock`)."""
        evict_at = self.evict_at_ms(slot)
        if evict_at is not None and now_ms >= evict_at:
            return True
        return slot.pending_ms is not None and self._may_have_left(slot, now_ms, [])

    def _may_have_left(self, slot: OrderSlot, at_ms: int, memo: list[int]) -> bool:
        """Whether changes the slot owes a derivation for could have closed the order
        long enough before `at_ms` for it to leave the state (`memo`: `_earliest_ms`'s)."""
        return at_ms >= self._earliest_ms(slot, memo) + self.limits.closed_order_retention_ms

    @staticmethod
    def _earliest_ms(slot: OrderSlot, memo: list[int]) -> int:
        """The earliest event time among the order's facts (a closure is never before it)."""
        if not memo:
            facts = slot.facts
            # the earliest instant first, one conversion: called for most inputs of a batch
            times = [s.event_time for s in facts.scans]
            times.extend(r.event_time for r in facts.records)
            memo.append(to_ms(min(times)) if times else 2**62)
        return memo[0]

    def _refused(
        self, slot: OrderSlot, at_ms: int, held: int, most: int, arrival: Arrival,
        effects: Effects,
    ) -> bool:  # fmt: skip
        """Refuse a record timed `at_ms` into `effects`: `order_closed` past the eviction
        instant, `state_limit` when the order already holds `most` of its kind."""
        if self._closed_before(slot, at_ms):
            code = ReasonCode.ORDER_CLOSED
        elif held >= most:
            code = ReasonCode.STATE_LIMIT
        else:
            return False
        assert arrival.position is not None
        _merge(effects, self.refuse(slot.facts.order_id, code, arrival.position, arrival.raw,
                                    arrival.now))  # fmt: skip
        return True

    def _take(self, slot: OrderSlot, arrival: Arrival, effects: Effects, record_ms: int) -> _Step:
        """Apply one input to the slot; refusals and rejoins go straight to `effects`.
        `record_ms`: a scan's or order record's `_record_time` in ms (unused for answers)."""
        item = arrival.item
        facts = slot.facts
        if isinstance(item, ScanEvent):
            if has_scan(facts, item.event_id):
                # a known event_id changes nothing; re-announce the joins in case this is a
                # redelivery after a crash that kept the slot but lost the messages it sent
                _merge(effects, self.rejoin(slot))
                return _Step.NOTHING
            if self._refused(slot, record_ms, len(facts.scans),
                             self.limits.max_scans_per_order, arrival, effects):  # fmt: skip
                return _Step.NOTHING
            facts.scans.append(scan_fact(item))  # not `add_scan`: its event_id was just checked
            return _Step.EVALUATE
        if isinstance(item, OrderRecord):
            position = arrival.position
            assert position is not None
            if any(known.offset == position.offset for known in facts.records):
                _merge(effects, self.rejoin(slot))
                return _Step.NOTHING
            if self._refused(slot, record_ms, len(facts.records),
                             self.limits.max_records_per_order, arrival, effects):  # fmt: skip
                return _Step.NOTHING
            facts.records.append(order_record_fact(item, position.offset))  # offset checked above
            return _Step.EVALUATE
        if isinstance(item, CustomerAnswer):
            return self._customer(slot, item)
        return self._downtimes(slot, item)

    def on_scan(
        self, slot: OrderSlot, scan: ScanEvent, position: RecordPosition, raw: bytes, now: datetime
    ) -> Effects:
        return self.on_inputs(slot, [Arrival(scan, now, position, raw)])

    def on_order_record(
        self,
        slot: OrderSlot,
        record: OrderRecord,
        position: RecordPosition,
        raw: bytes,
        now: datetime,
    ) -> Effects:
        return self.on_inputs(slot, [Arrival(record, now, position, raw)])

    def on_customer(self, slot: OrderSlot, answer: CustomerAnswer, now: datetime) -> Effects:
        return self.on_inputs(slot, [Arrival(answer, now)])

    def on_downtimes(self, slot: OrderSlot, answer: DowntimeAnswer, now: datetime) -> Effects:
        return self.on_inputs(slot, [Arrival(answer, now)])

    @staticmethod
    def _customer(slot: OrderSlot, answer: CustomerAnswer) -> _Step:
        if answer.customer_id != slot.subscribed_customer:
            return _Step.NOTHING  # an answer about a customer the order no longer has
        if answer.customer_id == slot.customer_id and answer.version < slot.customer_version:
            return _Step.NOTHING
        effective = slot.customer if slot.customer_id == slot.subscribed_customer else None
        slot.customer_id = answer.customer_id
        slot.customer_version = answer.version
        slot.customer = answer.customer
        if answer.customer == effective:
            return _Step.STORE  # a newer version of the same fact: store, no evaluation
        return _Step.EVALUATE

    @staticmethod
    def _downtimes(slot: OrderSlot, answer: DowntimeAnswer) -> _Step:
        unit = answer.unit_id
        known = slot.downtime_versions.get(unit)
        if known is not None and answer.version < (known[0], known[1]):
            return _Step.NOTHING
        slot.downtime_versions[unit] = list(answer.version)
        floor_before = slot.downtime_floor.get(unit)
        floor = answer.floor_ms
        if floor is not None:
            slot.downtime_floor[unit] = max(floor, slot.downtime_floor.get(unit, floor))
        downtimes = [downtime_from_json(d) for d in answer.downtimes]
        if downtimes == slot.downtimes.get(unit, []) and floor_before == slot.downtime_floor.get(
            unit
        ):
            return _Step.STORE  # a newer version of the same answer: no evaluation
        if downtimes:
            slot.downtimes[unit] = downtimes
        else:
            slot.downtimes.pop(unit, None)
        return _Step.EVALUATE

    def rejoin(self, slot: OrderSlot) -> Effects:
        """The join messages of the slot as it stands (idempotent: same versions)."""
        effects = Effects()
        if slot.subscribed_customer is not None:
            effects.subscriptions.append(
                Subscription(slot.facts.order_id, slot.subscribed_customer, subscribe=True)
            )
        for unit, visits in sorted(slot.occupancy_sent.items()):
            effects.occupancy.append(
                Occupancy(slot.facts.order_id, unit, slot.occupancy_version, visits)
            )
        return effects

    def on_clock(self, slot: OrderSlot, now: datetime, received: Received | None = None) -> Effects:
        """A deadline of this order fell due: re-derive its alerts at `now`, or evict it.

        A derivation the slot owes is made first, at its own clock (its facts decide
        when the order closed, hence whether it leaves the state now), unless `now`
        is before its earliest fact + the retention: the order cannot leave the
        state then, and one derivation at `now` ends where the two would (alerts
        are a function of the facts and the clock; the owed one's versions would be
        superseded at once)."""
        if slot.pending_ms is not None:
            if not self._may_have_left(slot, to_ms(now), []):
                return self._derive(slot, now, received or Received())
            effects = self.derive_owed(slot, received)
            _merge(effects, self.on_clock(slot, now))
            return effects
        evict_at = self.evict_at_ms(slot)
        if evict_at is not None and to_ms(now) >= evict_at:
            return self._evict(slot)
        return self._evaluate(slot, now, changed=False)

    def _evict(self, slot: OrderSlot) -> Effects:
        """Leave the joins: the customer forgets the order, each unit its visits."""
        effects = Effects(evicted=True)
        order_id = slot.facts.order_id
        if slot.subscribed_customer is not None:
            effects.subscriptions.append(
                Subscription(order_id, slot.subscribed_customer, subscribe=False)
            )
        for unit in sorted(slot.occupancy_sent):
            effects.occupancy.append(Occupancy(order_id, unit, slot.occupancy_version, forget=True))
        return effects

    # --- the one derivation -------------------------------------------------------

    def _evaluate(
        self,
        slot: OrderSlot,
        now: datetime,
        *,
        changed: bool,
        scans: dict[str, tuple[RecordPosition, bytes]] | None = None,
        records: dict[int, tuple[RecordPosition, bytes]] | None = None,
    ) -> Effects:
        """Re-derive the order; `scans`/`records` were just received (for their dead letters)."""
        facts = slot.facts
        effects = Effects(changed=True)
        slot.clock_ms = max(slot.clock_ms, to_ms(now))
        slot.plan = self.plan_fingerprint
        fold = fold_records(facts.records, self.plan)
        customer_id = fold.record.customer_id if fold.record is not None else None
        if customer_id != slot.subscribed_customer:
            if slot.subscribed_customer is not None:
                effects.subscriptions.append(
                    Subscription(facts.order_id, slot.subscribed_customer, subscribe=False)
                )
            if customer_id is not None:
                effects.subscriptions.append(
                    Subscription(facts.order_id, customer_id, subscribe=True)
                )
            slot.subscribed_customer = customer_id
            slot.customer_id, slot.customer_version, slot.customer = None, -1, None
        customer = slot.customer if slot.customer_id == customer_id else None

        evaluation = evaluate_order(
            facts.order_id, facts, customer, slot.downtimes, self.plan, now, slot.version + 1,
            fold=fold,
        )  # fmt: skip
        effects.alerts, final = alert_changes(
            slot.published, evaluation.alerts_json, final=_folded_away(slot.downtime_floor)
        )
        for key in final:
            del slot.published[key]
        for alert in effects.alerts:
            slot.published[alert["alert_id"]] = alert
        closed = evaluation.fold.cancelled_at or evaluation.walk.completed_at
        slot.closed_at_ms = None if closed is None else to_ms(closed)
        due = [
            ms
            for ms in (
                None if evaluation.next_deadline is None else to_ms(evaluation.next_deadline),
                self.evict_at_ms(slot),
            )
            if ms is not None
        ]
        slot.next_deadline_ms = min(due) if due else None
        spans = occupancy_spans(evaluation.walk, evaluation.fold.cancelled_at)
        self._occupancy(slot, spans, effects)
        for scan in evaluation.off_route_scans:
            position, raw = (scans or {}).get(scan.event_id, (None, None))
            self._dead_letter_off_route(slot, effects, scan.event_id, position, raw, now)
        for record in evaluation.rejected_records:
            tag = f"r:{record.offset}"
            if tag not in slot.dead_lettered:
                slot.dead_lettered.append(tag)
                loc, msg = refusal(record, self.plan)
                effects.dead_letters.append(
                    DeadLetter.build(
                        None,
                        RecordPosition(ORDERS, slot.partition, record.offset).source(),
                        [ErrorDetail(loc=loc, msg=msg, type="bad_update")],
                        ReasonCode.BAD_UPDATE,
                        now,
                    )
                )
        if changed or effects.alerts:
            slot.version += 1
            if self.snapshots:
                effects.snapshot = orjson.dumps(evaluation.state_json(slot.version))
        if records:
            self._with_record_sources(effects, slot, records, now)
        return effects

    def _occupancy(
        self, slot: OrderSlot, spans: list[tuple[Visit, datetime | None]], effects: Effects
    ) -> None:
        by_unit: dict[str, list[list[Any]]] = {}
        for v, end in spans:
            start = v.start
            visit = [v.stage, v.number, None if start is None else to_ms(start),
                     None if end is None else to_ms(end)]  # fmt: skip
            known = by_unit.get(v.unit_id)
            if known is None:
                by_unit[v.unit_id] = [visit]
            else:
                known.append(visit)
        sent = slot.occupancy_sent
        units = by_unit.keys() | sent.keys() if sent else by_unit.keys()
        for unit in sorted(units):
            visits = by_unit.get(unit, [])
            if len(visits) > 1:
                visits.sort(key=_STAGE_VISIT)
            if sent.get(unit) == visits:
                continue
            slot.occupancy_version += 1
            slot.occupancy_sent[unit] = visits
            effects.occupancy.append(
                Occupancy(slot.facts.order_id, unit, slot.occupancy_version, visits)
            )

    def _dead_letter_off_route(
        self,
        slot: OrderSlot,
        effects: Effects,
        event_id: str,
        position: RecordPosition | None,
        raw: bytes | None,
        now: datetime,
    ) -> None:
        tag = f"s:{event_id}"
        if tag in slot.dead_lettered:
            return
        slot.dead_lettered.append(tag)
        # Refused later (a route change): the offset is not kept, the event id names it.
        where = position.source() if position else DeadLetterSource(
            kind="kafka", topic=SCANS, partition=slot.partition, request_id=f"event:{event_id}"
        )  # fmt: skip
        effects.dead_letters.append(
            DeadLetter.build(
                raw,
                where,
                [
                    ErrorDetail(
                        loc="stage", msg="stage is not on the order's route", type="off_route"
                    )
                ],
                ReasonCode.OFF_ROUTE,
                now,
                key=slot.facts.order_id.encode(),
            )
        )

    def _with_record_sources(
        self,
        effects: Effects,
        slot: OrderSlot,
        records: dict[int, tuple[RecordPosition, bytes]],
        now: datetime,
    ) -> None:
        """Give refused order records their real source and bytes when they were just received."""
        fixed: list[DeadLetter] = []
        for letter in effects.dead_letters:
            offset = letter.source.offset
            if letter.reason_code is ReasonCode.BAD_UPDATE and offset in records:
                position, raw = records[offset]
                letter = DeadLetter.build(
                    raw, position.source(), letter.errors, ReasonCode.BAD_UPDATE, now,
                    key=slot.facts.order_id.encode(),
                )  # fmt: skip
            fixed.append(letter)
        effects.dead_letters = fixed


_RECORDS = (ScanEvent, OrderRecord)
"""The inputs that are records (a tuple: `ScanEvent | OrderRecord` builds a union per test)."""

_STAGE_VISIT = itemgetter(0, 1)
"""An occupancy entry's (stage, visit number): the order units receive visits in."""


def _record_time(item: ScanEvent | OrderRecord, now: datetime) -> datetime:
    """The event time the closed-order check reads (as `_take`)."""
    if isinstance(item, ScanEvent):
        return item.event_time
    return item.event_time or item.placed_at or now


def _merge(into: Effects, more: Effects) -> None:
    """Append `more` to `into`; the later snapshot replaces an earlier one."""
    into.alerts.extend(more.alerts)
    if more.snapshot is not None:
        into.snapshot = more.snapshot
    into.dead_letters.extend(more.dead_letters)
    into.subscriptions.extend(more.subscriptions)
    into.occupancy.extend(more.occupancy)
    into.changed = into.changed or more.changed
    into.evicted = into.evicted or more.evicted


def _folded_away(floors: dict[str, int]) -> Callable[[dict[str, Any]], bool]:
    """Whether a published alert is about a downtime its unit folded away (final)."""
    limits = {unit: format_utc_cached(from_ms(ms)) for unit, ms in floors.items()}

    def final(alert: dict[str, Any]) -> bool:
        limit = limits.get(alert.get("unit_id") or "")
        return (
            limit is not None
            and alert["type"] == AlertType.ORDER_DISRUPTED.value
            and alert["deadline"] <= limit  # one fixed-width UTC format: text order is time
        )

    return final
