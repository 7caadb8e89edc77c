"""A record read from another partition than its id's: a keyless one is forwarded there, a
keyed one is a dead letter; never a second state.

Kafka's default partitioner spreads keyless records (valid input) over every
partition. The engine once processed such a scan where it was read and wrote its
order to that partition's changelog as well: after a restart the stale copy
could win and the order's later scans were gone. Then it dead-lettered it,
refusing valid input. Now it forwards a copy, keyed with the id, to the id's
partition of the same topic, and processes the copy there. A keyed record
elsewhere (a producer with another partitioner, or a worker counting the topic's
partitions otherwise) is a dead letter: forwarding it too let two workers that
disagree on the partition count send a copy back and forth for ever. The
decision (`schemas.placement.misplaced`) is pure; the rest runs through the real
faust agents, no broker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_helpers import (
    RawInputChannel,
    alert_differences,
    by_id,
    capture_outputs,
    reference_alerts,
    run_agents,
)
from kafka import KafkaProducer
from samples import customer_json, order_created, scan
from structlog.testing import capture_logs

from chainwatch.replay import ReplayRun, no_progress
from chainwatch.replay_records import Refused, outgoing
from chainwatch.settings import Settings
from schemas.customers import TOMBSTONE
from schemas.dead_letter import DeadLetter, ReasonCode
from schemas.placement import Misplaced, misplaced
from schemas.plan import load_plan
from schemas.validation import RecordRejected, decode_input, decode_replay_line
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.engine.order_slot import OrderSlot
from streams.partitioning import partition_of
from streams.topics import SCANS, TopicNames

PARTITIONS = 4
ORDER = "PO-1"
HOME = partition_of(ORDER.encode(), PARTITIONS)
ELSEWHERE = (HOME + 1) % PARTITIONS
PLAN = load_plan(None)


def _home(key: bytes) -> int:
    return partition_of(key, PARTITIONS)


def _scan_bytes(event_id: str, order_id: str = ORDER) -> bytes:
    value = {"event_id": event_id, "order_id": order_id, "stage": "yarn_sourcing",
             "action": "started", "unit_id": "YARN-1",
             "event_time": "2027-03-01T10:00:00Z"}  # fmt: skip
    return json.dumps(value).encode()


def test_a_keyless_record_off_its_ids_partition_belongs_on_the_partition_of_its_id_as_key() -> None:
    scan = decode_input("scans", _scan_bytes("e-1"), plan=PLAN)
    assert misplaced("scans", None, scan, HOME, _home) is None
    assert misplaced("scans", ORDER.encode(), scan, HOME, _home) is None
    assert misplaced("scans", None, scan, ELSEWHERE, _home) == Misplaced(ORDER.encode(), HOME)
    c_home = partition_of(b"C-7", PARTITIONS)
    c_away = (c_home + 1) % PARTITIONS
    # a keyless tombstone names no customer: nowhere to forward it, dead-lettered where it is
    assert misplaced("crm.customers", None, TOMBSTONE, c_away, _home) is None


@pytest.mark.parametrize(
    ("topic", "field"), [("scans", "order_id"), ("crm.customers", "customer_id")]
)
def test_a_keyed_record_off_its_keys_partition_is_refused_with_what_to_fix(
    topic: str, field: str
) -> None:
    """Never forwarded: a copy is keyed, so a copy read by a worker that counts the topic's
    partitions otherwise would be forwarded back, and so on for ever."""
    record = (
        TOMBSTONE
        if topic == "crm.customers"
        else decode_input("scans", _scan_bytes("e-1"), plan=PLAN)
    )
    key = b"C-7" if topic == "crm.customers" else ORDER.encode()
    home = _home(key)
    with pytest.raises(RecordRejected) as refused:
        misplaced(topic, key, record, (home + 1) % PARTITIONS, _home)
    assert refused.value.reason_code is ReasonCode.KEY_MISMATCH
    (error,) = refused.value.errors
    assert (error.loc, error.type) == (field, "wrong_partition")
    assert f"not on partition {home} where" in error.msg
    assert "murmur2_random" in error.msg
    assert "CHAINWATCH_KAFKA__PARTITIONS" in error.msg
    assert "\n" not in error.msg


def test_the_advice_names_what_to_fix_in_the_producer() -> None:
    assert "order_id as key" in Misplaced(b"PO-1", 0).advice("scans")


def _engine(tmp_path: Path, partitions: int = PARTITIONS) -> tuple[Any, Engine]:
    app = create_app("wrong-partition", bootstrap="localhost:1", partitions=partitions,
                     data_dir=tmp_path)  # fmt: skip
    return app, Engine(app, EngineConfig(names=TopicNames("t."), plan=PLAN, clock="live"))


def _records(engine: Engine, topic: str, outcome: str) -> float:
    sample = engine.runtime.metrics.registry.get_sample_value(
        "chainwatch_worker_records_total", {"topic": topic, "outcome": outcome}
    )
    return sample or 0.0


def _forwarded(engine: Engine, topic: str) -> float:
    return _records(engine, topic, "forwarded")


def _ok(engine: Engine, topic: str) -> float:
    return _records(engine, topic, "ok")


def _dead(engine: Engine, topic: str) -> float:
    return _records(engine, topic, "dead_lettered")


def _letters(produced: Any) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(v) for _, v in produced.keyed("t.dead-letter")]


async def _until(engine: Engine, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until the agents' steps (taken in the background) made `done()` true."""
    stepped, count = asyncio.Event(), engine.runtime._count

    def counted(*args: Any) -> None:  # each step ends by counting its records
        count(*args)
        stepped.set()

    engine.runtime._count = counted  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                stepped.clear()
                if done():
                    return
                await stepped.wait()
    finally:
        engine.runtime._count = count  # type: ignore[method-assign]


def test_a_keyless_scan_off_its_orders_partition_is_forwarded_and_its_copy_processed(
    tmp_path: Path,
) -> None:
    app, engine = _engine(tmp_path)
    produced = capture_outputs(engine.runtime)
    copies: list[tuple[bytes | None, bytes | None, int | None]] = []

    async def run() -> None:
        async with app.agents["scans"].test_context(RawInputChannel(app, "scans")) as scans:
            await scans.put(_scan_bytes("keyed"), key=ORDER.encode(), partition=HOME)
            await scans.put(_scan_bytes("keyless-home"), key=None, partition=HOME)
            await scans.put(_scan_bytes("keyless-away"), key=None, partition=ELSEWHERE)
            await scans.put(_scan_bytes("keyed-away"), key=ORDER.encode(), partition=ELSEWHERE)
            await _until(engine, lambda: _forwarded(engine, "scans") + _dead(engine, "scans") == 2)
            copies.extend((k, v, p) for t, k, v, p in produced.sent if t == "t.scans")
            for key, value, partition in copies:  # as the consumer reads them back
                await scans.put(value, key=key, partition=partition)
            await _until(engine, lambda: _ok(engine, "scans") == 3)

    with capture_logs() as logs:
        run_agents(app, run())
    assert copies == [(ORDER.encode(), _scan_bytes("keyless-away"), HOME)]
    slot = OrderSlot.from_json(orjson.loads(engine.runtime.order_table[ORDER]))
    assert [s.event_id for s in slot.facts.scans] == ["keyed", "keyless-home", "keyless-away"]
    assert slot.partition == HOME
    changelogs = {p for t, _, _, p in produced.sent if t.endswith("-orders-changelog")}
    assert changelogs == {HOME}
    (letter,) = _letters(produced)  # the keyed one: its producer partitions keys otherwise
    assert (letter.reason_code, letter.source.partition) == (ReasonCode.KEY_MISMATCH, ELSEWHERE)
    assert letter.errors[0].type == "wrong_partition"
    assert (_forwarded(engine, "scans"), _dead(engine, "scans")) == (1, 1)
    (line,) = [e for e in logs if e["event"] == "record_forwarded_to_its_partition"]
    assert (line["topic"], line["partition"], line["home_partition"]) == ("scans", ELSEWHERE, HOME)
    assert "order_id as key" in line["fix"]


def test_a_copy_read_by_a_worker_counting_other_partitions_is_a_dead_letter_not_forwarded_back(
    tmp_path: Path,
) -> None:
    """A topic altered from 4 to 8 partitions, one worker started with each count: the one
    with 4 forwards a keyless scan to the order's partition of 4; the one with 8 reads the
    copy there, not on the order's partition of 8. Forwarded again (keyed, it was), it went
    back and forth for ever, one appended record per hop; a dead letter ends it."""
    order = "PO-2"
    four, eight = partition_of(order.encode(), 4), partition_of(order.encode(), 8)
    assert four != eight
    app, engine = _engine(tmp_path / "four", partitions=4)
    produced = capture_outputs(engine.runtime)

    async def keyless(partitions: int) -> None:
        async with app.agents["scans"].test_context(RawInputChannel(app, "scans")) as scans:
            raw = _scan_bytes("keyless", order_id=order)
            await scans.put(raw, key=None, partition=(four + 1) % partitions)
            await _until(engine, lambda: _forwarded(engine, "scans") == 1)

    run_agents(app, keyless(4))
    (copy,) = [(k, v, p) for t, k, v, p in produced.sent if t == "t.scans"]
    assert copy == (order.encode(), _scan_bytes("keyless", order_id=order), four)

    app, engine = _engine(tmp_path / "eight", partitions=8)
    produced = capture_outputs(engine.runtime)

    async def the_copy() -> None:
        async with app.agents["scans"].test_context(RawInputChannel(app, "scans")) as scans:
            key, value, partition = copy
            await scans.put(value, key=key, partition=partition)
            await _until(engine, lambda: _dead(engine, "scans") == 1)

    run_agents(app, the_copy())
    assert [t for t, _, _, _ in produced.sent if t == "t.scans"] == []  # not forwarded back
    (letter,) = _letters(produced)
    assert (letter.reason_code, letter.source.partition) == (ReasonCode.KEY_MISMATCH, four)
    assert letter.errors[0].type == "wrong_partition"
    assert "CHAINWATCH_KAFKA__PARTITIONS" in letter.errors[0].msg
    assert _forwarded(engine, "scans") == 0
    assert order not in engine.runtime.order_table


def test_keyless_unit_statuses_and_customers_off_their_partition_are_forwarded_keyed_dead(
    tmp_path: Path,
) -> None:
    app, engine = _engine(tmp_path)
    produced = capture_outputs(engine.runtime)
    status = {"event_id": "u-1", "unit_id": "DYE-1", "status": "down",
              "event_time": "2027-03-01T10:00:00Z"}  # fmt: skip
    unit_home = partition_of(b"DYE-1", PARTITIONS)
    c_home = partition_of(b"C-7", PARTITIONS)
    customer = customer_json("C-7", "Nordic Knits AB")

    async def run() -> None:
        async with app.agents["unit-status"].test_context(
            RawInputChannel(app, "unit-status")
        ) as statuses:
            raw = json.dumps(status).encode()
            await statuses.put(raw, key=None, partition=(unit_home + 1) % PARTITIONS)
            await _until(engine, lambda: _forwarded(engine, "unit-status") == 1)
        async with app.agents["customers"].test_context(
            RawInputChannel(app, "crm.customers")
        ) as customers:
            await customers.put(customer, key=None, partition=(c_home + 1) % PARTITIONS)
            await customers.put(customer, key=b"C-7", partition=(c_home + 1) % PARTITIONS)
            await customers.put(None, key=b"C-7", partition=(c_home + 2) % PARTITIONS)
            await customers.put(customer, key=b"C-8", partition=c_home)  # mis-keyed
            await _until(engine, lambda: _dead(engine, "crm.customers") == 3)

    run_agents(app, run())
    assert [(t, k, v, p) for t, k, v, p in produced.sent if not t.startswith("t.dead")] == [
        ("t.unit-status", b"DYE-1", json.dumps(status).encode(), unit_home),
        ("t.crm.customers", b"C-7", customer, c_home),
    ]
    assert "DYE-1" not in engine.runtime.unit_table
    assert "C-7" not in engine.runtime.customer_table
    assert [(d.reason_code, d.errors[0].type) for d in _letters(produced)] == [
        (ReasonCode.KEY_MISMATCH, "wrong_partition"),
        (ReasonCode.KEY_MISMATCH, "wrong_partition"),
        (ReasonCode.KEY_MISMATCH, "key_mismatch"),
    ]
    assert (_forwarded(engine, "unit-status"), _forwarded(engine, "crm.customers")) == (1, 1)


def test_a_keyless_tombstone_is_a_dead_letter_not_acked_and_ignored(tmp_path: Path) -> None:
    """A tombstone names the customer it deletes by its key only. Kafka refuses a keyless
    record on the compacted CRM topic, but takes it on one run uncompacted: the engine
    acked it and did nothing, the one record it dropped without a dead letter."""
    app, engine = _engine(tmp_path)
    produced = capture_outputs(engine.runtime)
    c_home = partition_of(b"C-7", PARTITIONS)

    async def run() -> None:
        async with app.agents["customers"].test_context(
            RawInputChannel(app, "crm.customers")
        ) as customers:
            await customers.put(None, key=None, partition=c_home)
            await customers.put(customer_json("C-7", "Nordic Knits AB"), key=b"C-7",
                                partition=c_home)  # fmt: skip
            await _until(engine, lambda: "C-7" in engine.runtime.customer_table)

    run_agents(app, run())
    (letter,) = _letters(produced)
    assert (letter.reason_code, letter.source.partition) == (ReasonCode.VALIDATION_FAILED, c_home)
    assert (letter.errors[0].loc, letter.errors[0].type) == ("key", "missing")
    assert _forwarded(engine, "crm.customers") == 0
    # the same record as a scenario line is the replay's own dead letter (the compacted
    # topic would not take it): one fault, one reason and error (it was `bad_replay_line`)
    line = b'{"topic": "crm.customers", "value": null}'
    refused = outgoing(decode_replay_line(line), line, PLAN)
    assert isinstance(refused, Refused)
    assert (refused.code, refused.errors) == (letter.reason_code, letter.errors)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_keyless_scan_on_another_partition_ends_processed_on_its_orders_over_the_broker(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """A worker and a real broker: the scan reaches its order (the alerts are the ones the
    whole file gives, and differ without it), and no dead letter is written."""
    until = datetime(2027, 3, 12, tzinfo=UTC)
    order = order_created(order_id="PO-7", placed_at="2027-03-01T08:00:00Z",
                          due_at="2027-03-08T17:00:00Z")  # fmt: skip
    started, completed = (
        scan(event_id=f"s-{action}", order_id="PO-7", stage="yarn_sourcing", action=action,
             unit_id="YARN-1", event_time=at, quantity=None, uom=None, lot_id=None, attributes={})
        for action, at in (("started", "2027-03-01T09:00:00Z"),
                           ("completed", "2027-03-01T12:00:00Z"))
    )  # fmt: skip
    keyed = [("orders", order), ("scans", started)]
    part, whole = tmp_path / "keyed.ndjson", tmp_path / "whole.ndjson"
    for path, lines in ((part, keyed), (whole, [*keyed, ("scans", completed)])):
        path.write_text("".join(json.dumps({"topic": t, "key": "PO-7", "value": v}) + "\n"
                                for t, v in lines))  # fmt: skip
    expected, dead = reference_alerts(whole, until)
    assert dead == 0
    assert by_id(expected) != by_id(reference_alerts(part, until)[0])  # the scan matters

    run = ReplayRun(settings_factory(), part, partitions=PARTITIONS, progress=no_progress)
    try:
        run.prepare_topics()
        run.start_workers(1)
        run.wait_for_group(1)
        run.publish()
        away = (partition_of(b"PO-7", PARTITIONS) + 1) % PARTITIONS
        producer = KafkaProducer(bootstrap_servers=run.settings.kafka.bootstrap, acks="all")
        try:
            producer.send(run.settings.kafka.topic(SCANS), value=json.dumps(completed).encode(),
                          partition=away).get(timeout=30)  # fmt: skip
        finally:
            producer.close()
        run.finish(until, timeout_s=120)
        result = run.results()
    finally:
        run.close()
    assert alert_differences(result.alerts, expected) == ""
    assert result.dead_letters == 0


def test_a_batch_handled_again_after_its_step_raised_forwards_a_record_once(
    tmp_path: Path,
) -> None:
    """What the failed step collected is kept and sent with the retries' (`agent_body`): the
    record-by-record retry must not add a second copy of a record forwarded already."""
    app, engine = _engine(tmp_path)
    produced = capture_outputs(engine.runtime)
    settle, raised = engine.orders.settle, []

    async def settle_once_failing() -> None:
        if not raised:
            raised.append(True)
            raise RuntimeError("a step that fails after the forward")
        await settle()

    engine.orders.settle = settle_once_failing  # type: ignore[method-assign]

    async def run() -> None:
        async with app.agents["scans"].test_context(RawInputChannel(app, "scans")) as scans:
            await scans.put(_scan_bytes("keyless-away"), key=None, partition=ELSEWHERE, wait=False)
            await scans.put(_scan_bytes("keyed"), key=ORDER.encode(), partition=HOME, wait=False)
            await _until(engine, lambda: _forwarded(engine, "scans") + _ok(engine, "scans") == 2)

    run_agents(app, run())
    assert raised
    assert [(k, p) for t, k, _, p in produced.sent if t == "t.scans"] == [(ORDER.encode(), HOME)]
