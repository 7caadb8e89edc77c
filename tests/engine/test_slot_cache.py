"""Decoded order slots kept beside the table (streams.engine.slot_cache).

A kept slot must be exactly what decoding the stored value gives, handed out
only while the table holds that value, and never after a step that failed
half-way through it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_helpers import capture_outputs

from schemas.dead_letter import DeadLetter, DeadLetterSource, ReasonCode
from schemas.orders import OrderRecord
from schemas.plan import load_plan
from schemas.scans import ScanEvent
from schemas.validation import RecordRejected, decode_input
from simulator import SimConfig, simulate
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.engine.messages import CustomerAnswer, DowntimeAnswer
from streams.engine.order_processor import Arrival, OrderProcessor
from streams.engine.order_slot import OrderSlot, decode_slot
from streams.engine.slot_cache import SlotCache
from streams.rules.facts import CustomerFact, from_ms, to_ms
from streams.topics import TopicNames

PLAN = load_plan(None)


def _slot(order_id: str) -> OrderSlot:
    return OrderSlot.new(order_id)


def test_a_kept_slot_is_handed_out_once_and_only_for_the_value_it_was_stored_as() -> None:
    cache = SlotCache(4)
    slot = _slot("PO-1")
    stored = b'{"stored": 1}'
    cache.keep("PO-1", stored, slot)
    assert cache.take("PO-1", bytes(stored)) is slot  # equal bytes (RocksDB hands out copies)
    assert cache.take("PO-1", stored) is None  # taken: the step owns it until it is kept again
    cache.keep("PO-1", stored, slot)
    assert cache.take("PO-1", b'{"stored": 2}') is None  # the table moved on (a rebalance)
    assert cache.take("PO-1", stored) is None  # and the stale slot is gone for good
    cache.keep("PO-1", stored, slot)
    assert cache.take("PO-1", None) is None  # the order is not in the table
    assert (cache.hits, cache.misses) == (1, 4)


def test_the_least_recently_stored_orders_go_past_the_capacity_and_zero_keeps_none() -> None:
    cache = SlotCache(2)
    slots = {order_id: _slot(order_id) for order_id in ("PO-1", "PO-2", "PO-3")}
    for order_id, slot in slots.items():
        cache.keep(order_id, order_id.encode(), slot)
    cache.keep("PO-2", b"PO-2", slots["PO-2"])  # stored again: the most recent
    assert len(cache) == 2
    assert cache.take("PO-1", b"PO-1") is None
    assert cache.take("PO-2", b"PO-2") is slots["PO-2"]
    assert cache.take("PO-3", b"PO-3") is slots["PO-3"]
    off = SlotCache(0)
    off.keep("PO-1", b"PO-1", slots["PO-1"])
    assert len(off) == 0
    with pytest.raises(ValueError, match="capacity"):
        SlotCache(-1)


def _simulated_inputs(records: int) -> list[tuple[str, int, Any, bytes]]:
    """Valid orders and scans of a simulated scenario: (topic, offset, record, raw)."""
    offsets = itertools.count()
    inputs = []
    for sim in itertools.islice(simulate(SimConfig(seed=11)), records):
        raw = sim.value_bytes()
        if sim.topic not in ("orders", "scans") or raw is None:
            continue
        try:
            value = decode_input(sim.topic, raw, plan=PLAN)
        except RecordRejected:
            continue
        inputs.append((sim.topic, next(offsets), value, raw))
    return inputs


def test_every_slot_the_processor_leaves_is_what_its_stored_json_decodes_to() -> None:
    """Why a kept slot may stand in for decoding: the JSON keeps every field exactly
    (times in whole ms, floats, tuples, the joined customer and downtimes)."""
    processor = OrderProcessor(PLAN)
    slots: dict[str, OrderSlot] = {}
    checked = 0
    for n, (topic, offset, value, raw) in enumerate(_simulated_inputs(3_000)):
        assert isinstance(value, ScanEvent | OrderRecord)
        slot = slots.setdefault(value.order_id, OrderSlot.new(value.order_id))
        slot.partition = 0
        event_time = value.event_time or getattr(value, "placed_at", None)
        assert event_time is not None
        source = DeadLetterSource(kind="kafka", topic=topic, partition=0, offset=offset)
        arrivals = [Arrival(value, event_time, source, raw)]
        if slot.subscribed_customer is not None and n % 3 == 0:  # the joins answer too
            customer = CustomerFact(slot.subscribed_customer, f"Name {n}", "gold")
            arrivals.append(Arrival(CustomerAnswer(value.order_id, customer.customer_id, n,
                                                   customer), event_time))  # fmt: skip
        if n % 5 == 0 and slot.occupancy_sent:
            unit = sorted(slot.occupancy_sent)[0]
            start = to_ms(event_time) - 3_600_000
            downtime = [unit, None, "down", "machine_breakdown", start, start + 600_000, f"u{n}"]
            answer = DowntimeAnswer(value.order_id, unit, (n, 0), [downtime], None)
            arrivals.append(Arrival(answer, from_ms(to_ms(event_time))))
        effects = processor.on_inputs(slot, arrivals)
        if effects.changed:
            decoded = decode_slot(value.order_id, orjson.dumps(slot.to_json()))
            assert decoded == slot
            checked += 1
    assert checked > 1_000
    assert any(s.customer is not None for s in slots.values())
    assert any(s.downtimes for s in slots.values())
    assert any(s.published for s in slots.values())


def _scan(event_id: str, hours: int) -> Any:
    value = {"event_id": event_id, "order_id": "PO-1", "stage": "yarn_sourcing",
             "action": "started", "unit_id": "YARN-1",
             "event_time": f"2027-03-01T{10 + hours:02d}:00:00Z"}  # fmt: skip
    return decode_input("scans", json.dumps(value).encode(), plan=PLAN)


def test_the_agents_reuse_a_stored_slot_but_never_one_a_failed_step_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real faust agent: the second scan's step finds the slot the first one
    stored; a step that raises after changing its slot leaves the table's value to decode."""
    app = create_app("slots-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=PLAN, clock="event"))
    produced = capture_outputs(engine.runtime)
    agents = engine.orders
    real = agents.orders.on_inputs

    def failing(slot: OrderSlot, arrivals: Any) -> Any:
        effects = real(slot, arrivals)  # the slot is changed, then the step fails
        if any(getattr(a.item, "event_id", None) == "e-bad" for a in arrivals):
            raise RuntimeError("boom")
        return effects

    monkeypatch.setattr(agents.orders, "on_inputs", failing)

    async def run() -> None:
        async with app.agents["scans"].test_context() as scans:
            for event_id, hours in (("e-1", 0), ("e-2", 1), ("e-bad", 2), ("e-3", 3)):
                await scans.put(_scan(event_id, hours), key=b"PO-1")

    try:
        asyncio.run(run())
    finally:  # as tests/engine/test_engine_faust_context.py: the consumer thread's loop
        consumer = app._consumer
        if consumer is not None:
            consumer._thread.thread_loop.close()
    stored = decode_slot("PO-1", engine.runtime.order_table["PO-1"])
    assert stored is not None
    assert [s.event_id for s in stored.facts.scans] == ["e-1", "e-2", "e-3"]
    # e-2 and e-bad found the slot stored before them; e-1 (a new order) and e-3 (after
    # the failure: the half-applied slot was not kept) decoded the table's value
    assert (agents.slots.hits, agents.slots.misses) == (2, 2)
    letters = [DeadLetter.model_validate_json(v) for _, v in
               produced.keyed(engine.runtime.out.dead_letters)]  # fmt: skip
    assert [d.reason_code for d in letters] == [ReasonCode.PROCESSING_ERROR]
