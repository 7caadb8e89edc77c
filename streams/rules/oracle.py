"""The oracle for the Kafka engine: a pure in-memory run of a replay scenario.

It applies the same validation (`schemas.validation`) and the same rules as the
streaming engine, but with every record in memory and one evaluation at the end,
so its output is what any correct engine must converge to for the same file
(RULES.md "What must hold"). Log offsets are the line numbers of the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.alerts import Alert
from schemas.customers import Customer, Tombstone
from schemas.json_blank import json_blank
from schemas.kafka_size import too_large
from schemas.orders import OrderRecord
from schemas.plan import SlaPlan
from schemas.scans import ScanEvent
from schemas.topics import CUSTOMERS
from schemas.unit_status import UnitStatus
from schemas.validation import RecordRejected, decode_input, decode_replay_line, line_key
from streams.partitioning import partition_of
from streams.rules.downtimes import Downtime, build_downtimes
from streams.rules.evaluate import (
    UnitOccupancy,
    current_customer_id,
    evaluate_order,
    evaluate_unit,
)
from streams.rules.facts import (
    CustomerFact,
    DowntimeRecord,
    OrderFacts,
    add_record,
    add_scan,
    add_unit_status,
)
from streams.rules.record_facts import order_record_fact, scan_fact, unit_status_fact


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    alerts: list[Alert]
    """Final alerts sorted by alert_id (retracted ones are simply absent)."""
    dead_letters: int


@dataclass(frozen=True, slots=True)
class _ClockAt:
    """Where the clocks were when a CRM record came: the file's, and each partition's
    (when the oracle models partitions)."""

    file: datetime | None
    partitions: dict[int, datetime]

    def of(self, partition: int | None) -> datetime | None:
        return self.file if partition is None else self.partitions.get(partition)


@dataclass(slots=True)
class _World:
    partitions: int | None = None
    """Order partitions modelled for the CRM join's eviction clock (None: one clock)."""
    orders: dict[str, OrderFacts] = field(default_factory=dict)
    customers: dict[str, list[tuple[_ClockAt, CustomerFact | None]]] = field(default_factory=dict)
    """Each customer's CRM facts in file order, with the clocks where each came (None: a
    tombstone's forgetting)."""
    unit_status: dict[str, list[DowntimeRecord]] = field(default_factory=dict)
    clock: datetime | None = None
    partition_clocks: dict[int, datetime] = field(default_factory=dict)
    """Each partition's clock: the largest event_time of the scans, order records and
    unit statuses on that partition number (the engine keeps one clock per number for
    every input topic, `EngineClock.observe`)."""
    rejected: int = 0

    def partition(self, key: str) -> int | None:
        if self.partitions is None:
            return None
        return partition_of(key.encode("utf-8"), self.partitions)

    def clock_at(self) -> _ClockAt:
        return _ClockAt(self.clock, dict(self.partition_clocks))

    def advance_on(self, key: str, event_time: datetime | None) -> None:
        """Move the file's clock, and that of the partition `key` is read from."""
        self.advance(event_time)
        partition = self.partition(key)
        if partition is not None and event_time is not None:
            before = self.partition_clocks.get(partition)
            if before is None or event_time > before:
                self.partition_clocks[partition] = event_time

    def order(self, order_id: str) -> OrderFacts:
        facts = self.orders.get(order_id)
        if facts is None:
            facts = self.orders[order_id] = OrderFacts(order_id)
        return facts

    def advance(self, event_time: datetime | None) -> None:
        if event_time is not None and (self.clock is None or event_time > self.clock):
            self.clock = event_time


def _ingest(world: _World, offset: int, line: bytes, plan: SlaPlan) -> None:
    try:
        replay = decode_replay_line(line)
        # the bytes replay publishes and the worker decodes, not the line parser's
        # re-serialisation (of a key the value writes twice it kept only the last)
        value = replay.value_as_written(line)
        key = replay.key_bytes()
        if too_large(key, value) is not None:  # replay refuses it before decoding
            world.rejected += 1
            return
        record = decode_input(replay.topic, value, plan=plan, key=key)
    except RecordRejected:
        world.rejected += 1
        return
    sent_key = line_key(key, replay.topic, record)
    if sent_key is None and (replay.topic == CUSTOMERS or value is None):
        # Kafka takes no keyless record on the compacted CRM topic, nor one with neither
        # key nor value: replay dead-letters such a line itself (a tombstone without a
        # key decodes, and was taken here as if sent)
        world.rejected += 1
        return
    if too_large(sent_key, value) is not None:
        world.rejected += 1  # so it is with the key replay sends it with: its id
        return
    if isinstance(record, ScanEvent):
        add_scan(world.order(record.order_id), scan_fact(record))
        world.advance_on(record.order_id, record.event_time)
    elif isinstance(record, OrderRecord):
        add_record(world.order(record.order_id), order_record_fact(record, offset))
        world.advance_on(record.order_id, record.event_time)
    elif isinstance(record, UnitStatus):
        add_unit_status(world.unit_status.setdefault(record.unit_id, []), unit_status_fact(record))
        world.advance_on(record.unit_id, record.event_time)
    elif isinstance(record, Customer):
        world.customers.setdefault(record.customer_id, []).append(
            (world.clock_at(), CustomerFact(record.customer_id, record.name, record.tier.value))
        )
    elif isinstance(record, Tombstone) and replay.key is not None:
        world.customers.setdefault(replay.key, []).append((world.clock_at(), None))


def _customer_as_kept(
    history: list[tuple[_ClockAt, CustomerFact | None]],
    evicted_at: datetime | None,
    partition: int | None,
) -> CustomerFact | None:
    """The customer's last CRM fact that reached the order before it was evicted.

    A streaming engine removes a closed order from its state after the retention
    and its alerts are final then (CONTRACT v1.2 "Bounded state"): a CRM change
    that comes when the clock has passed that instant changes nothing for it.
    """
    kept: CustomerFact | None = None
    for at, fact in history:
        clock = at.of(partition)
        if evicted_at is not None and clock is not None and clock >= evicted_at:
            break
        kept = fact
    return kept


def run_scenario(
    lines: Iterable[bytes],
    plan: SlaPlan,
    until: datetime | None,
    *,
    closed_order_retention: timedelta | None = None,
    partitions: int | None = None,
) -> ScenarioResult:
    """Final alerts of a scenario at `T = max(until, largest event_time)`.

    The clock counts the event_time of every record that passed validation, as a
    streaming engine sees it on arrival, even one the order fold later refuses.
    Dead letters: rejected lines/records (a record over Kafka's message limit too, as
    replay refuses it: `schemas.kafka_size`, and a keyless line Kafka would not take, a
    tombstone without a key), refused order records, off-route scans.

    With `closed_order_retention`, an order's alerts carry the customer as known
    when the order was evicted (that long after it closed): a CRM record placed
    in the file where the clock has passed that instant does not reach it. The
    clock of a CRM record is the largest event_time before it in the file, or with
    `partitions` (the replay's count) the largest of the scans, order records and unit
    statuses before it on the order's partition number, as the engine's partition
    clock (one per number, whichever input topic moved it): it trails
    the file's by the gap between that partition's records, minutes in a busy file
    but days at the quiet end of a simulated one (`bench/fleet.py`'s 30 days x 105
    orders: an order evicted there kept a tier change the file's clock had passed).
    """
    world = _World(partitions)
    for offset, line in enumerate(lines):
        if not json_blank(line):
            _ingest(world, offset, line, plan)
    now = max((t for t in (until, world.clock) if t is not None), default=None)
    if now is None:
        return ScenarioResult([], world.rejected)

    downtimes: dict[str, list[Downtime]] = {}
    for downtime in build_downtimes(r for rs in world.unit_status.values() for r in rs):
        downtimes.setdefault(downtime.unit_id, []).append(downtime)

    alerts: dict[str, Alert] = {}
    occupancy: list[UnitOccupancy] = []
    dead = world.rejected
    for order_id in sorted(world.orders):
        facts = world.orders[order_id]
        customer_id = current_customer_id(facts, plan)
        history = world.customers.get(customer_id, []) if customer_id is not None else []
        customer = history[-1][1] if history else None
        evaluation = evaluate_order(order_id, facts, customer, downtimes, plan, now)
        closed = evaluation.fold.cancelled_at or evaluation.walk.completed_at
        if closed is not None and closed_order_retention is not None:
            kept = _customer_as_kept(
                history, closed + closed_order_retention, world.partition(order_id)
            )
            if kept != customer:
                evaluation = evaluate_order(order_id, facts, kept, downtimes, plan, now)
        alerts.update(evaluation.alerts)
        occupancy.extend(evaluation.occupancy)
        dead += len(evaluation.off_route_scans) + len(evaluation.rejected_records)
    for unit_id in sorted(downtimes):
        alerts.update(evaluate_unit(unit_id, downtimes[unit_id], plan, now, occupancy))
    return ScenarioResult([alerts[key] for key in sorted(alerts)], dead)
