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
from streams.engine.messages import CustomerAnswer, encode_bundle
from streams.engine.order_slot import OrderSlot, peek
from streams.rules.facts import CustomerFact
from streams.topics import ORDERS, SCANS, TopicNames


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


def _scan(
    order_id: str, n: int, stage: str = "yarn_sourcing", *, action: str = "started",
    at: str | None = None,
) -> _Event:  # fmt: skip
    value = {"event_id": f"{order_id}-{n}", "order_id": order_id, "stage": stage,
             "action": action, "unit_id": "YARN-1",
             "event_time": at or f"2027-03-01T1{n}:00:00Z"}  # fmt: skip
    raw = json.dumps(value).encode()
    scan = decode_input(SCANS, raw, plan=load_plan(None))
    return _Event(_Message(order_id.encode(), raw, offset=n), scan)


def _order_record(order_id: str, offset: int, **fields: Any) -> _Event:
    raw = json.dumps({"order_id": order_id, **fields}).encode()
    record = decode_input(ORDERS, raw, plan=load_plan(None))
    return _Event(_Message(order_id.encode(), raw, offset=offset, topic="t.orders"), record)


def _alerts(engine: Engine, produced: CapturingProducer) -> list[tuple[str, str, str]]:
    """(order_id, alert_type, status) of every alert record sent, in order."""
    alerts = [orjson.loads(value or b"") for _, value in produced.keyed(engine.runtime.out.alerts)]
    return [(a["order_id"], a["type"], a["status"]) for a in alerts]


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


async def _step(engine: Engine, *events: _Event) -> None:
    """One batch of scans through the order agents, its outputs sent."""
    await engine.orders.on_scans(list(events))
    await engine.runtime.outputs.flush()


def test_orders_owe_their_derivation_while_the_backlog_lasts_then_derive_once(
    engine: tuple[Engine, CapturingProducer, list[bool]],
) -> None:
    engine_, produced, backlog = engine
    rt, orders = engine_.runtime, engine_.orders

    async def run() -> None:
        await _step(engine_, _scan("PO-1", 1), _scan("PO-2", 1))
        await _step(engine_, _scan("PO-1", 2))
        assert set(orders.owed) == {"PO-1", "PO-2"}
        assert _states(engine_, produced) == []  # nothing derived yet
        stored, _ = peek(rt.order_table["PO-1"])
        assert stored.pending  # the debt is stored with the scans
        backlog[0] = False
        await _step(engine_, _scan("PO-2", 2))

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


def test_deadlines_that_fall_due_while_the_backlog_lasts_fire_once_when_it_ends(
    engine: tuple[Engine, CapturingProducer, list[bool]],
) -> None:
    """A replay's topics are read at their own pace, so a partition's clock passes
    deadlines whose fulfilling scans are still on their way. Fired as the clock passed
    them, such a deadline published an alert and its retraction and derived the order
    once more; fired when the backlog ends, the order is derived once with what came."""
    engine_, produced, backlog = engine
    orders = engine_.orders

    async def run() -> None:
        backlog[0] = False  # yarn sourcing started (48 h): due 2027-03-03T10:00
        started = "2027-03-01T10:00:00Z"
        await _step(engine_, _scan("PO-1", 1, at=started), _scan("PO-3", 1, at=started))
        assert orders.owed == {}
        backlog[0] = True
        await _step(engine_, _scan("PO-2", 1, at="2027-03-03T12:00:00Z"))  # the clock passes both
        completed = _scan("PO-1", 2, action="completed", at="2027-03-02T10:00:00Z")
        await _step(engine_, completed, _scan("PO-1", 3, "dyeing", at="2027-03-02T12:00:00Z"))
        assert _alerts(engine_, produced) == []  # not fired while the backlog lasts
        backlog[0] = False
        await _step(engine_, _scan("PO-2", 2, action="completed", at="2027-03-03T12:30:00Z"))

    asyncio.run(run())
    assert orders.owed == {}
    # PO-1's late scans fulfilled its deadline: no alert opened and retracted;
    # PO-3's was missed: its alert is published once, at the backlog's end
    assert _alerts(engine_, produced) == [("PO-3", "stage_overdue", "open")]
    versions = [(key, state["version"]) for key, state in _states(engine_, produced)]
    assert sorted(versions) == [(b"PO-1", 1), (b"PO-1", 2), (b"PO-2", 1), (b"PO-3", 1),
                                (b"PO-3", 2)]  # fmt: skip


def test_a_join_answer_after_an_eviction_fell_due_finds_the_order_gone(
    engine: tuple[Engine, CapturingProducer, list[bool]],
) -> None:
    """Deadlines wait for the backlog's end, but an eviction does not wait for a join
    answer: the per-record engine evicted the order when the clock passed the instant,
    so an answer after that changes nothing."""
    engine_, produced, backlog = engine
    rt, orders = engine_.runtime, engine_.orders
    inbox = rt.order_inbox.get_topic_name()

    async def run() -> None:
        backlog[0] = False
        await orders.on_order_records([
            _order_record("PO-1", 1, op="created", customer_id="C-1", product="crewneck",
                          quantity=100, placed_at="2027-03-01T00:00:00Z",
                          due_at="2027-03-20T00:00:00Z"),
            _order_record("PO-1", 2, op="cancelled", event_time="2027-03-01T12:00:00Z"),
        ])  # fmt: skip
        await rt.outputs.flush()
        assert not peek(rt.order_table["PO-1"])[0].evicted
        backlog[0] = True  # 30 days' retention: PO-1 leaves at 2027-03-31T12:00
        await orders.on_scans([_scan("PO-2", 1, at="2027-04-05T00:00:00Z")])
        assert not peek(rt.order_table["PO-1"])[0].evicted  # deferred with the backlog
        answer = CustomerAnswer("PO-1", "C-1", 5, CustomerFact("C-1", "Knit Co", "platinum"))
        bundle = encode_bundle([answer.encode()])
        await orders.on_inbox([_Event(_Message(b"PO-1", bundle, offset=1, topic=inbox), bundle)])
        await rt.outputs.flush()
        assert peek(rt.order_table["PO-1"])[0].evicted  # evicted before the answer

    asyncio.run(run())
    # the answer derived nothing: PO-1's only snapshot is the one before it left
    assert [state["version"] for key, state in _states(engine_, produced) if key == b"PO-1"] == [1]
