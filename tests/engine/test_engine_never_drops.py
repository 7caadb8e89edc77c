"""CONTRACT v1.2 "Nothing is silently dropped": mis-keyed records, unit statuses
with a stage outside the plan and records whose handling fails are dead letters
with their own reason, and the worker goes on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from engine_helpers import BatchStream, CapturingProducer, capture_outputs, order_event
from samples import scan

from chainwatch.replay import ReplayRun, no_progress, read_topic
from chainwatch.settings import Settings
from schemas.dead_letter import DeadLetter, ReasonCode
from schemas.plan import load_plan
from schemas.validation import decode_input
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.engine.messages import (
    CUSTOMER_INBOX,
    ORDER_INBOX,
    UNIT_INBOX,
    CustomerAnswer,
    Occupancy,
    Subscription,
    decode_order_inbox,
    encode_bundle,
)
from streams.engine.order_slot import OrderSlot
from streams.topics import DEAD_LETTER, SCANS, TopicNames

LINES: list[dict[str, Any]] = [
    {"topic": "orders", "key": "PO-1", "value": {
        "op": "created", "order_id": "PO-1", "customer_id": "C-1", "product": "crewneck",
        "quantity": 100, "placed_at": "2027-03-01T08:00:00Z", "due_at": "2027-03-20T08:00:00Z"}},
    {"topic": "scans", "key": "PO-2", "value": {
        "event_id": "e-1", "order_id": "PO-1", "stage": "yarn_sourcing", "action": "started",
        "unit_id": "YARN-N2", "event_time": "2027-03-01T10:00:00Z"}},
    {"topic": "unit-status", "key": "DYE-01", "value": {
        "event_id": "u-1", "unit_id": "DYE-01", "status": "down", "stage": "spinning",
        "event_time": "2027-03-01T09:00:00Z"}},
    {"topic": "unit-status", "key": "DYE-02", "value": {
        "event_id": "u-2", "unit_id": "DYE-01", "status": "down",
        "event_time": "2027-03-01T09:00:00Z"}},
    {"topic": "crm.customers", "key": "C-9", "value": {
        "customer_id": "C-1", "name": "Nordic Knits AB", "tier": "gold"}},
    {"topic": "crm.customers", "key": '"C-1"', "value": None},  # a quoted id deletes no one
    {"topic": "crm.customers", "key": "C-8", "value": None},  # a tombstone: no dead letter
    {"topic": "scans", "key": "PO-1", "value": {
        "event_id": "e-2", "order_id": "PO-1", "stage": "yarn_sourcing", "action": "started",
        "unit_id": "YARN-N2", "event_time": "2027-03-01T10:00:00Z"}},
]  # fmt: skip


@pytest.mark.integration
def test_mis_keyed_records_and_unknown_unit_stages_are_dead_letters(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    scenario = tmp_path / "keys.ndjson"
    scenario.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    run = ReplayRun(settings_factory(), scenario, partitions=2, progress=no_progress)
    try:
        run.publish()
        run.start_workers(1)
        run.finish(datetime(2027, 3, 2, tzinfo=UTC), timeout_s=240)
        letters = [
            DeadLetter.model_validate_json(value)
            for _key, value in asyncio.run(read_topic(run.settings, DEAD_LETTER))
            if value is not None
        ]
    finally:
        run.close()
    found = sorted((p.source.topic or "", p.reason_code.value, p.errors[0].loc) for p in letters)
    assert found == [
        ("crm.customers", "key_mismatch", "customer_id"),
        ("crm.customers", "validation_failed", "key"),
        ("scans", "key_mismatch", "order_id"),
        ("unit-status", "key_mismatch", "unit_id"),
        ("unit-status", "validation_failed", "stage"),
    ]


def _engine(tmp_path: Path) -> tuple[Engine, CapturingProducer]:
    app = create_app("unit-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event"))
    return engine, capture_outputs(engine.runtime)


def _dead_letters(engine: Engine, produced: CapturingProducer) -> list[DeadLetter]:
    return [
        DeadLetter.model_validate_json(value)
        for _, value in produced.keyed(engine.runtime.out.dead_letters)
    ]


def test_a_record_whose_handling_raises_is_dead_lettered_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    """The batch fails as a whole, then each record is handled alone: only the bad one is lost."""
    engine, produced = _engine(tmp_path)
    handled: list[int] = []

    async def handle(batch: Sequence[Any]) -> None:
        for event in batch:
            if event.value == b"boom":
                raise ValueError("boom")
            handled.append(event.message.offset)

    agent = engine.runtime.agent_body(handle, ORDER_INBOX)

    async def drive() -> int:
        steps = 0
        batches = [
            [order_event(b"a", 6), order_event(b"boom", 7), order_event(b"b", 8)],
            [order_event(b"c", 9)],
        ]
        async for _ in agent(BatchStream(batches)):
            steps += 1
        return steps

    assert asyncio.run(drive()) == 2
    assert handled == [6, 6, 8, 9]  # 6 again: the batch's retry, one record at a time
    sent = _dead_letters(engine, produced)
    assert [(p.reason_code, p.source.offset) for p in sent] == [(ReasonCode.PROCESSING_ERROR, 7)]
    assert sent[0].raw_value() == b"boom"
    assert "ValueError: boom" in sent[0].errors[0].msg


def test_corrupt_internal_messages_are_dead_lettered_and_the_agent_goes_on(
    tmp_path: Path,
) -> None:
    engine, produced = _engine(tmp_path)
    agent = engine.runtime.agent_body(engine.orders.on_inbox, ORDER_INBOX)

    async def drive() -> None:
        async for _ in agent(BatchStream([[order_event(b"not json", 7), order_event(b"{}", 8)]])):
            pass

    asyncio.run(drive())
    sent = _dead_letters(engine, produced)
    assert [(p.reason_code, p.source.offset) for p in sent] == [
        (ReasonCode.PROCESSING_ERROR, 7),
        (ReasonCode.PROCESSING_ERROR, 8),
    ]
    assert sent[0].raw_value() == b"not json"
    assert "JSONDecodeError" in sent[0].errors[0].msg
    assert "KeyError" in sent[1].errors[0].msg  # `{}` is no message of the order inbox


class _Event:
    """An event the handlers can make faust's current event (a weak reference to it)."""

    def __init__(self, value: bytes, offset: int) -> None:
        self.message = SimpleNamespace(
            key=None, value=value, partition=0, offset=offset, topic="inbox", tp=("inbox", 0)
        )
        self.value = value


@pytest.mark.parametrize("inbox", [CUSTOMER_INBOX, UNIT_INBOX])
def test_a_corrupt_bundle_of_the_customer_or_unit_inbox_is_dead_lettered_and_the_agent_goes_on(
    tmp_path: Path, inbox: str
) -> None:
    """The bundle after the corrupt one, in the same batch, is still handled."""
    engine, produced = _engine(tmp_path)
    rt = engine.runtime
    handle = engine.customers.on_inbox if inbox == CUSTOMER_INBOX else engine.units.on_inbox
    good = (
        Subscription("PO-1", "C-1", subscribe=True)
        if inbox == CUSTOMER_INBOX
        else Occupancy("PO-1", "U-1", 1, [["dyeing", 1, 0, None]])
    )
    batch = [_Event(b"[1]", 7), _Event(encode_bundle([good.encode()]), 8)]

    async def drive() -> None:
        async for _ in rt.agent_body(handle, inbox)(BatchStream([batch])):
            pass

    asyncio.run(drive())
    sent = _dead_letters(engine, produced)
    assert [(p.reason_code, p.source.topic, p.source.offset) for p in sent] == [
        (ReasonCode.PROCESSING_ERROR, inbox, 7)
    ]
    assert sent[0].raw_value() == b"[1]"
    if inbox == CUSTOMER_INBOX:  # subscribed: the customer's (unknown) fact answered
        [(_, answer)] = produced.keyed(rt.out.order_inbox)
        assert decode_order_inbox(answer) == [CustomerAnswer("PO-1", "C-1", -1, None)]
    else:
        assert rt.occupancy_table.get("U-1|PO-1") is not None


class _Message:
    """A fetched record as faust's consumer makes it: its generation, whether acked."""

    def __init__(self, offset: int, generation_id: int) -> None:
        self.key, self.value, self.partition, self.offset = b"PO-1", b"x", 0, offset
        self.generation_id = generation_id
        self.acked = False


class _AckingStream(BatchStream):
    """Acks each batch after the agent's step, as `take_events` does (a no-op when acked)."""

    def __init__(self, batches: list[list[Any]]) -> None:
        super().__init__(batches)
        self.acked: list[int] = []

    async def take_events(self, _max: int, _within: float) -> AsyncIterator[list[Any]]:
        for batch in self._batches:
            yield batch
            for event in batch:
                if not event.message.acked:
                    event.message.acked = True
                    self.acked.append(event.message.offset)


def test_a_batch_taken_before_a_rebalance_is_handled_during_the_revocation_and_a_stale_one_is_not_acked(  # noqa: E501
    tmp_path: Path,
) -> None:
    """faust revokes partitions only once every taken message is acked, then commits: a
    batch skipped there (flow stopped) was acked unhandled and committed past, lost.
    A message of an older generation is left to be read again, and never acked."""
    engine, _ = _engine(tmp_path)
    rt, app = engine.runtime, engine.runtime.app
    handled: list[int] = []

    async def handle(batch: Sequence[Any]) -> None:
        handled.extend(event.message.offset for event in batch)

    current, stale = _Message(1, generation_id=5), _Message(2, generation_id=4)
    unacked = {current, stale}
    app._consumer = SimpleNamespace(_unacked_messages=unacked)
    app.consumer_generation_id = 5
    app.flow_control.suspend()  # the revocation has begun
    stream = _AckingStream([[SimpleNamespace(message=m, value=m.value) for m in (current, stale)]])

    async def drive() -> None:
        async for _ in rt.agent_body(handle, ORDER_INBOX)(stream):
            pass

    asyncio.run(drive())
    assert handled == [1]
    assert stream.acked == [1]  # the stale message's offset is never marked safe to commit
    assert stale not in unacked  # nor waited for by the revocation


class _ScanEvent:
    """A scan as the scans agent takes it: decoded, with its message (current-event-able)."""

    def __init__(self, event_id: str, offset: int) -> None:
        raw = json.dumps(scan(event_id=event_id, order_id="PO-1")).encode()
        self.message = SimpleNamespace(
            key=b"PO-1", value=raw, partition=0, offset=offset, topic=SCANS, tp=(SCANS, 0)
        )
        self.value = decode_input(SCANS, raw, plan=load_plan(None))


def test_a_step_that_raises_half_way_leaves_no_changed_slot_behind_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that raised after changing an order's slot must not hand its changes to the
    records retried after it (a slot kept in memory across the retry once lost e-2 here):
    each is taken from the table as stored, the failing one is dead-lettered and the
    others are stored."""
    engine, produced = _engine(tmp_path)
    rt, processor = engine.runtime, engine.orders.orders
    evaluate = processor._evaluate

    def fail_on_bad(slot: OrderSlot, *args: Any, **kwargs: Any) -> Any:
        if any(known.event_id == "bad" for known in slot.facts.scans):
            raise RuntimeError("boom")
        return evaluate(slot, *args, **kwargs)

    monkeypatch.setattr(processor, "_evaluate", fail_on_bad)
    batches = [[_ScanEvent("e-1", 1)], [_ScanEvent("bad", 2), _ScanEvent("e-2", 3)]]

    async def drive() -> None:
        async for _ in rt.agent_body(engine.orders.on_scans, SCANS)(BatchStream(batches)):
            pass

    asyncio.run(drive())
    stored = OrderSlot.from_json(orjson.loads(rt.order_table.data["PO-1"]))
    assert [known.event_id for known in stored.facts.scans] == ["e-1", "e-2"]
    sent = _dead_letters(engine, produced)
    assert [(p.reason_code, p.source.offset) for p in sent] == [(ReasonCode.PROCESSING_ERROR, 2)]
