"""An event-clock worker derives an order once while a backlog lasts (`OrderAgents.settle`).

The engine's real order agents, runtime, tables and sends (captured at the producer,
no broker); only the backlog signal is set by the test (it reads the consumer's
positions, tested in tests/foundation/test_kafka_transport.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_helpers import CapturingProducer, capture_outputs

from schemas.dead_letter import DeadLetter, ReasonCode
from schemas.plan import load_plan
from schemas.validation import decode_input
from streams.app import create_app
from streams.engine import order_agents
from streams.engine.agents import Engine, EngineConfig
from streams.engine.order_slot import OrderSlot, peek
from streams.topics import SCANS, TopicNames


@dataclass
class _Message:
    key: bytes
    value: bytes
    offset: int
    partition: int = 0
    topic: str = "t.scans"


class _Event:
    """What the agents read of a faust event (weak-referenceable, as faust's are)."""

    def __init__(self, message: _Message, value: Any) -> None:
        self.message, self.value = message, value


def _scan(order_id: str, n: int, stage: str = "yarn_sourcing") -> _Event:
    value = {"event_id": f"{order_id}-{n}", "order_id": order_id, "stage": stage,
             "action": "started", "unit_id": "YARN-1",
             "event_time": f"2027-03-01T1{n}:00:00Z"}  # fmt: skip
    raw = json.dumps(value).encode()
    scan = decode_input(SCANS, raw, plan=load_plan(None))
    return _Event(_Message(order_id.encode(), raw, offset=n), scan)


@pytest.fixture
def engine(tmp_path: Path) -> tuple[Engine, CapturingProducer, list[bool]]:
    app = create_app("defer-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    config = EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event",
                          defer_derivations=True)  # fmt: skip
    engine = Engine(app, config)
    produced = capture_outputs(engine.runtime)
    backlog = [True]
    engine.runtime.backlog = lambda: backlog[0]  # type: ignore[method-assign]
    return engine, produced, backlog


def _states(engine: Engine, produced: CapturingProducer) -> list[tuple[bytes | None, Any]]:
    return [
        (key, orjson.loads(value or b"")) for key, value in produced.keyed(engine.runtime.out.state)
    ]


def test_orders_owe_their_derivation_while_the_backlog_lasts_then_derive_once(
    engine: tuple[Engine, CapturingProducer, list[bool]],
) -> None:
    engine_, produced, backlog = engine
    rt, orders = engine_.runtime, engine_.orders

    async def step(*events: _Event) -> None:
        await orders.on_scans(list(events))
        await rt.outputs.flush()

    async def run() -> None:
        await step(_scan("PO-1", 1), _scan("PO-2", 1))
        await step(_scan("PO-1", 2))
        assert set(orders.owed) == {"PO-1", "PO-2"}
        assert _states(engine_, produced) == []  # nothing derived yet
        stored, _ = peek(rt.order_table["PO-1"])
        assert stored.pending  # the debt is stored with the scans
        backlog[0] = False
        await step(_scan("PO-2", 2))

    asyncio.run(run())
    assert orders.owed == {}
    states = _states(engine_, produced)
    assert sorted(key for key, _ in states) == [b"PO-1", b"PO-2"]  # one snapshot per order
    assert {state["version"] for _, state in states} == {1}
    for order_id in ("PO-1", "PO-2"):
        slot = OrderSlot.from_json(orjson.loads(rt.order_table[order_id]))
        assert slot.pending_ms is None
        assert [s.event_id for s in slot.facts.scans] == [f"{order_id}-1", f"{order_id}-2"]


def test_an_owed_derivation_that_raises_dead_letters_the_records_it_covers(
    engine: tuple[Engine, CapturingProducer, list[bool]],
) -> None:
    engine_, produced, backlog = engine
    rt, orders = engine_.runtime, engine_.orders

    def broken(*_args: Any) -> Any:
        raise RuntimeError("a rule failed")

    async def run() -> None:
        await orders.on_scans([_scan("PO-1", 1), _scan("PO-1", 2)])
        orders.orders.derive_owed = broken  # type: ignore[method-assign]
        backlog[0] = False
        await orders.settle()
        await rt.outputs.flush()

    asyncio.run(run())
    letters = [
        DeadLetter.model_validate_json(v or b"") for _, v in produced.keyed(rt.out.dead_letters)
    ]
    assert [(d.reason_code, d.source.offset) for d in letters] == [
        (ReasonCode.PROCESSING_ERROR, 1),
        (ReasonCode.PROCESSING_ERROR, 2),
    ]
    assert letters[0].raw_value() == _scan("PO-1", 1).message.value
    assert orders.owed == {}  # not retried at every step ...
    assert peek(rt.order_table["PO-1"])[0].pending  # ... but still owed by the stored slot


def test_recovery_takes_up_the_derivations_the_table_owes(
    engine: tuple[Engine, CapturingProducer, list[bool]],
) -> None:
    """A worker that stopped while orders owed a derivation: its successor finds them in
    the table and derives them once it has an event of their partition."""
    engine_, produced, backlog = engine
    rt, orders = engine_.runtime, engine_.orders
    rt.active_partitions = lambda _topic: {0}  # type: ignore[method-assign]

    async def run() -> None:
        await orders.on_scans([_scan("PO-1", 1)])
        await rt.outputs.flush()
        orders.owed.clear()  # what a fresh worker knows
        orders.acting.clear()
        await orders.on_recovered()
        assert orders.owed == {"PO-1": 0}
        backlog[0] = False
        await orders.on_scans([_scan("PO-2", 1)])
        await rt.outputs.flush()

    asyncio.run(run())
    assert orders.owed == {}
    assert sorted(key for key, _ in _states(engine_, produced)) == [b"PO-1", b"PO-2"]


def test_settling_many_owed_orders_sends_their_outputs_on_the_way(
    engine: tuple[Engine, CapturingProducer, list[bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settle of thousands of owed orders must not hold all their snapshots, alerts and
    changelog records in memory first (the 500k backlog's peak RSS came from that)."""
    engine_, produced, backlog = engine
    rt, orders = engine_.runtime, engine_.orders
    monkeypatch.setattr(order_agents, "RECOVERY_FLUSH_EVERY", 6)
    order_ids = [f"PO-{n}" for n in range(10)]
    pending: list[int] = []

    async def run() -> None:
        await orders.on_scans([_scan(order_id, 1) for order_id in order_ids])
        await rt.outputs.flush()
        assert len(orders.owed) == 10
        backlog[0] = False
        flush = rt.outputs.flush

        async def noted() -> None:
            pending.append(rt.outputs.pending)
            await flush()

        rt.outputs.flush = noted  # type: ignore[method-assign]
        await orders.settle()
        pending.append(rt.outputs.pending)  # left for the step's own flush

    asyncio.run(run())
    assert orders.owed == {}
    assert len(pending) >= 3  # flushed on the way, not once at the end
    assert max(pending) < 6 + 6  # never much more than the bound collected
    sent = {key for key, _ in _states(engine_, produced)}
    assert len(sent) >= 8  # most snapshots already sent before the step ends
