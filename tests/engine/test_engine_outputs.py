"""The engine's outputs, as `OutputSender` hands them to the producer (no broker).

The producer is replaced at `send_batch_tracked`, the seam below which only aiokafka
runs (tests/foundation/test_kafka_transport.py covers that part with a broker):
which topic, partition, key and value each output gets, in which order and in
which batch, is production's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from engine_helpers import capture_outputs

from schemas.dead_letter import DeadLetter, DeadLetterSource, ReasonCode
from schemas.plan import load_plan
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.engine.messages import (
    BUNDLE_MAX_BYTES,
    Occupancy,
    Subscription,
    decode_customer_inbox,
    decode_unit_inbox,
)
from streams.engine.order_processor import Effects
from streams.partitioning import partition_of
from streams.topics import TopicNames


def _engine(tmp_path: Path) -> Engine:
    app = create_app("outputs-test", bootstrap="localhost:1", partitions=2, data_dir=tmp_path)
    return Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event"))


def test_an_orders_effects_go_to_their_topics_with_their_keys_in_order(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    alerts = [{"alert_id": f"a{i}", "type": "start_overdue", "status": "open"} for i in (1, 2)]
    source = DeadLetterSource(kind="kafka", topic="scans", partition=1, offset=7)
    letter = DeadLetter.build(b"{", source, [], ReasonCode.NOT_JSON, datetime.now(UTC))
    effects = Effects(
        alerts=alerts,
        snapshot=b'{"order_id":"PO-1"}',
        dead_letters=[letter],
        subscriptions=[Subscription("PO-1", "C-9", subscribe=True)],
        occupancy=[Occupancy("PO-1", "KNIT-2", 3, forget=True)],
    )
    slot: Any = SimpleNamespace(facts=SimpleNamespace(order_id="PO-1"))  # nothing stored

    async def step() -> None:
        engine.orders.apply(slot, effects)
        assert produced.sent == []  # everything waits for the end of the step
        assert rt.outputs.pending == 6
        await rt.outputs.flush()

    asyncio.run(step())

    out = rt.out
    a1, a2 = (partition_of(key, 2) for key in (b"a1", b"a2"))
    letter_key = letter.dead_letter_id.encode()
    assert [(topic, key, partition) for topic, key, _, partition in produced.sent] == [
        ("t.alerts", b"a1", a1),
        ("t.alerts", b"a2", a2),
        ("t.order-state", b"PO-1", partition_of(b"PO-1", 2)),
        ("t.dead-letter", letter_key, partition_of(letter_key, 2)),
        (out.customer_inbox, None, rt.partition_of("C-9")),
        (out.unit_inbox, None, rt.partition_of("KNIT-2")),
    ]  # fmt: skip
    assert [batch[0] for batch in produced.batches] == [
        "t.alerts", *(["t.alerts"] if a1 != a2 else []),
        "t.order-state", "t.dead-letter", out.customer_inbox, out.unit_inbox,
    ]  # fmt: skip
    values = [value for _, _, value, _ in produced.sent]
    assert [orjson.loads(v) for v in values[:2]] == alerts
    assert values[2] == effects.snapshot
    assert values[3] == letter.encode()
    assert decode_customer_inbox(values[4]) == effects.subscriptions
    assert decode_unit_inbox(values[5]) == effects.occupancy
    assert out.customer_inbox == "outputs-test-customer-inbox"
    assert out.unit_inbox == "outputs-test-unit-inbox"


def test_an_output_too_large_to_send_raises_where_it_is_collected(tmp_path: Path) -> None:
    """An output the producer would refuse is not skipped: the step fails at once
    (the agent then handles the records alone and dead-letters the failing one)."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    produced.max_message_bytes = 100
    alert = {"alert_id": "a1", "type": "start_overdue", "status": "open", "x": "y" * 200}
    with pytest.raises(MessageSizeTooLargeError):
        rt.send_alerts([alert])
    published = "chainwatch_worker_alerts_published_total"
    labels = {"type": "start_overdue", "status": "open"}
    assert not rt.metrics.registry.get_sample_value(published, labels)  # not counted as sent
    assert rt.outputs.pending == 0


def _refuse_once(produced: Any, error: Exception, partition: int | None = None) -> None:
    """The next append (to `partition`, or any) raises `error`; every other one goes on."""
    append = produced.send_batch_tracked
    refusals = [error]

    async def refuse_once(topic: str, to: int, records: Any) -> Any:
        if refusals and partition in (None, to):
            raise refusals.pop()
        return await append(topic, to, records)

    produced.send_batch_tracked = refuse_once


def test_a_flush_that_fails_raises_into_the_step_and_keeps_what_it_could_not_send(
    tmp_path: Path,
) -> None:
    """No metadata for the alerts topic: the flush raises (the step is retried), and the
    alerts stay collected, so the retry's flush sends them, in the order collected."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    _refuse_once(produced, OSError("no metadata"))
    alerts = [{"alert_id": f"a{i}", "type": "start_overdue", "status": "open"} for i in range(5)]

    async def steps() -> None:
        rt.send_alerts(alerts)
        with pytest.raises(OSError, match="no metadata"):
            await rt.outputs.flush()
        assert produced.sent == []
        assert rt.outputs.pending == len(alerts)
        await rt.outputs.flush()

    asyncio.run(steps())
    got = [orjson.loads(value) for _, value in produced.keyed(rt.out.alerts)]
    for partition in (0, 1):
        mine = [a for a in alerts if partition_of(a["alert_id"].encode(), 2) == partition]
        assert [a for a in got if partition_of(a["alert_id"].encode(), 2) == partition] == mine
    assert sorted(a["alert_id"] for a in got) == sorted(a["alert_id"] for a in alerts)
    assert rt.outputs.pending == 0


def test_a_flush_that_fails_on_one_partition_does_not_send_anothers_appended_batch_again(
    tmp_path: Path,
) -> None:
    """Copies forwarded to partitions 0 and 1, and partition 1's append raises after
    partition 0's batch was appended: the retry's flush sends partition 1's only. It sent
    the topic's whole list again, and a second copy is a second row in ClickHouse."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    _refuse_once(produced, OSError("partition 1 has no leader"), partition=1)
    copies = [(f"PO-{i}".encode(), f"scan {i}".encode(), i % 2) for i in range(4)]

    async def steps() -> None:
        for key, value, partition in copies:
            rt.outputs.add("t.scans", key, value, partition=partition)
        with pytest.raises(OSError, match="no leader"):
            await rt.outputs.flush()
        assert produced.sent == [("t.scans", k, v, p) for k, v, p in copies if p == 0]
        assert rt.outputs.pending == 2
        await rt.outputs.flush()

    asyncio.run(steps())
    assert sorted(produced.sent) == sorted(("t.scans", k, v, p) for k, v, p in copies)
    assert rt.outputs.pending == 0


def test_a_steps_outputs_go_as_one_batch_per_partition(tmp_path: Path) -> None:
    """One delivery future per topic partition and step, not one per message."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    alerts = [{"alert_id": f"a{i}", "type": "start_overdue", "status": "open"} for i in range(40)]

    async def step() -> None:
        rt.send_alerts(alerts)
        await rt.outputs.flush()

    asyncio.run(step())
    assert sorted(produced.batches) == [
        ("t.alerts", p, sum(partition_of(a["alert_id"].encode(), 2) == p for a in alerts))
        for p in (0, 1)
    ]


class _AckingStream:
    """Hands the agent its batches as `take_events` does, and notes at each ack how
    many messages the producer had been given (an ack lets the offsets be committed)."""

    def __init__(self, batches: list[list[Any]], produced: Any) -> None:
        self._batches, self._produced = batches, produced
        self.sent_at_ack: list[int] = []

    async def take_events(self, _max: int, _within: float) -> AsyncIterator[list[Any]]:
        for batch in self._batches:
            yield batch
            self.sent_at_ack.append(len(self._produced.sent))


def _event(offset: int) -> Any:
    message = SimpleNamespace(key=b"x", value=b"x", partition=0, offset=offset)
    return SimpleNamespace(message=message, value=b"x")


def _units_on_each_partition(engine: Engine) -> tuple[list[str], list[str]]:
    units = [f"KNIT-{n}" for n in range(20)]
    by = [[u for u in units if engine.runtime.partition_of(u) == p] for p in (0, 1)]
    assert by[0]
    assert by[1]
    return by[0], by[1]


def test_a_steps_join_messages_go_as_one_bundle_per_partition_in_order_before_the_ack(
    tmp_path: Path,
) -> None:
    """Six occupancy reports to units on two partitions: two Kafka messages, each the
    partition's reports in send order, given to the producer before the batch is acked."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    zero, one = _units_on_each_partition(engine)
    units = [zero[0], one[0], zero[1 % len(zero)], one[0], zero[0], one[1 % len(one)]]
    reports = [Occupancy(f"PO-{n}", unit, n) for n, unit in enumerate(units)]

    async def handle(events: Sequence[Any]) -> None:
        for occ in reports:
            rt.join(rt.out.unit_inbox, occ)

    stream = _AckingStream([[_event(1), _event(2)]], produced)

    _run_unit_inbox(rt, handle, stream)
    assert [(topic, key, partition) for topic, key, _, partition in produced.sent] == [
        (rt.out.unit_inbox, None, 0),
        (rt.out.unit_inbox, None, 1),
    ]
    assert [decode_unit_inbox(value) for _, _, value, _ in produced.sent] == [
        [occ for occ in reports if occ.unit_id in zero],
        [occ for occ in reports if occ.unit_id in one],
    ]
    assert stream.sent_at_ack == [2]
    assert rt.outputs.pending == 0


def _run_unit_inbox(rt: Any, handle: Any, stream: Any) -> None:
    """Production's agent loop (`agent_body`) over `stream`, as the unit-inbox agent."""

    async def drive() -> None:
        async for _ in rt.agent_body(handle, "unit-inbox")(stream):
            pass

    asyncio.run(drive())


def test_what_a_failed_batch_collected_is_sent_with_its_retry(tmp_path: Path) -> None:
    """The first record's report is collected, then the batch raises; the retry of that
    record does not report again (its state is stored: as the agents' steps), yet the
    report is sent, once the retried record's step ends; the failing record is dead-lettered."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    stored: set[int] = set()
    report = Occupancy("PO-1", "KNIT-1", 1)

    async def handle(events: Sequence[Any]) -> None:
        for event in events:
            if event.message.offset == 2:
                raise ValueError("boom")
            if event.message.offset not in stored:
                stored.add(event.message.offset)
                rt.join(rt.out.unit_inbox, report)

    stream = _AckingStream([[_event(1), _event(2)]], produced)

    _run_unit_inbox(rt, handle, stream)
    bundles = [v for t, _, v, _ in produced.sent if t == rt.out.unit_inbox]
    assert [decode_unit_inbox(v) for v in bundles] == [[report]]
    letters = produced.keyed(rt.out.dead_letters)
    assert [orjson.loads(v)["source"]["offset"] for _, v in letters] == [2]
    assert stream.sent_at_ack == [2]


def test_join_messages_the_producer_refuses_even_on_the_last_retry_refuse_the_commit(
    tmp_path: Path,
) -> None:
    """The inbox cannot be written: every retry of the batch fails, its records are
    dead-lettered, and the join messages their stored state caused are not simply
    dropped with a log - the next commit is refused, so the inputs are read again
    (and announce their joins again) after the worker stops."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    capture = produced.send_batch_tracked

    async def no_inbox(topic: str, partition: int, records: Any) -> Any:
        if topic == rt.out.unit_inbox:
            raise OSError("inbox partition has no leader")
        return await capture(topic, partition, records)

    produced.send_batch_tracked = no_inbox  # type: ignore[method-assign]

    async def handle(events: Sequence[Any]) -> None:
        for event in events:
            rt.join(rt.out.unit_inbox, Occupancy(f"PO-{event.message.offset}", "KNIT-1", 1))

    stream = _AckingStream([[_event(1), _event(2)]], produced)

    _run_unit_inbox(rt, handle, stream)
    letters = [orjson.loads(v) for _, v in produced.keyed(rt.out.dead_letters)]
    assert [(d["source"]["offset"], d["reason_code"]) for d in letters] == [
        (1, "processing_error"),
        (2, "processing_error"),
    ]
    assert len(produced.refused) == 1
    assert "output(s) not sent" in produced.refused[0]
    assert "inbox partition has no leader" in produced.refused[0]
    assert rt.outputs.pending == 0
    assert stream.sent_at_ack == [2]


def test_a_bundle_is_closed_before_it_grows_past_the_limit(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    visits = [["dyeing", n, 0, None] for n in range(2000)]
    big = [Occupancy(f"PO-{n}", "KNIT-1", n, visits) for n in range(8)]
    assert 2 * len(big[0].encode()) < BUNDLE_MAX_BYTES < 8 * len(big[0].encode())

    async def step() -> None:
        for occ in big:
            rt.join(rt.out.unit_inbox, occ)
        await rt.outputs.flush()

    asyncio.run(step())
    values = [value for _, _, value, _ in produced.sent]
    assert len(values) > 1
    assert all(len(v) <= BUNDLE_MAX_BYTES for v in values)
    assert [occ for v in values for occ in decode_unit_inbox(v)] == big


# --- table writes: the store at once, the changelog at the end of the step -----------------


class _OnPartition:
    """An event of `partition` to act for (faust keeps the current event by weak reference)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(key=b"x", value=b"x", partition=partition, offset=0)


def test_a_table_write_is_stored_at_once_and_on_the_changelog_when_the_step_ends(
    tmp_path: Path,
) -> None:
    """What faust's `table[key] = value` gave (the key as UTF-8, the value, the current
    event's partition; a tombstone for a deletion), once per key and step: the last value."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    table = rt.order_table
    changelog = "outputs-test-orders-changelog"

    async def step() -> None:
        with rt.acting_for(_OnPartition(1)):
            rt.put(table, "PO-1", b"one")
            rt.put(table, "PO-2", b"two")
            rt.put(table, "PO-1", b"one, again")
            rt.delete(table, "PO-2")
            rt.delete(table, "PO-never-stored")
            assert table.get("PO-1") == b"one, again"  # stored at once
            assert table.get("PO-2") is None
            assert produced.sent == []
        await rt.outputs.flush()

    asyncio.run(step())
    assert produced.sent == [
        (changelog, b'"PO-1"', b"one, again", 1),
        (changelog, b'"PO-2"', None, 1),
    ]
    assert produced.refused == []


@pytest.mark.parametrize("key", ["PO-1", "KNIT-2|PO-7", "Ünit-ß|PO-1", 'q"uote\\'])
def test_a_changelog_record_is_what_fausts_table_write_gave(tmp_path: Path, key: str) -> None:
    """Recovery reads it with the table's serializers, and compaction keeps one record per
    key only if every writer encodes the key to the same bytes."""
    rt = _engine(tmp_path).runtime
    produced = capture_outputs(rt)
    tables = [rt.order_table, rt.customer_table, rt.subscription_table, rt.unit_table]
    tables.append(rt.occupancy_table)

    async def step() -> None:
        with rt.acting_for(_OnPartition(0)):
            for table in tables:
                rt.put(table, key, b'{"v":1}')
        await rt.outputs.flush()

    asyncio.run(step())
    for table, (topic, got_key, got_value, _) in zip(tables, produced.sent, strict=True):
        changelog = table.changelog_topic
        assert topic == changelog.get_topic_name()
        fausts_key, _ = changelog.prepare_key(key, table.key_serializer, changelog.schema)
        fausts_value, _ = changelog.prepare_value(
            b'{"v":1}', table.value_serializer, changelog.schema
        )
        assert (got_key, got_value) == (fausts_key, fausts_value)
        serializers = rt.app.serializers  # as recovery decodes it:
        assert serializers.loads_key(str, got_key, serializer=table.key_serializer) == key


def test_a_table_write_outside_an_agent_step_is_refused(tmp_path: Path) -> None:
    """No current event: no partition to write to, and no step's flush to send it."""
    rt = _engine(tmp_path).runtime
    capture_outputs(rt)
    with pytest.raises(RuntimeError, match="outside an agent step"):
        rt.put(rt.unit_table, "KNIT-1", b"{}")


def test_a_changelog_record_that_cannot_be_sent_stops_the_commit_not_the_step(
    tmp_path: Path,
) -> None:
    """Its value is stored; dead-lettering the inputs would not undo that. The next
    flush before a commit raises instead (the worker stops, its inputs come again)."""
    rt = _engine(tmp_path).runtime
    produced = capture_outputs(rt)
    original = produced.send_batch_tracked

    async def refuse_one(topic: str, partition: int, records: Any) -> Any:
        if partition == 0:
            raise OSError("no metadata")
        return await original(topic, partition, records)

    produced.send_batch_tracked = refuse_one  # type: ignore[method-assign]

    async def step() -> None:
        with rt.acting_for(_OnPartition(0)):
            rt.put(rt.unit_table, "KNIT-1", b"a")
        with rt.acting_for(_OnPartition(1)):
            rt.put(rt.unit_table, "KNIT-2", b"b")
        await rt.outputs.flush()

    asyncio.run(step())
    assert [key for _, key, _, _ in produced.sent] == [b'"KNIT-2"']
    assert len(produced.refused) == 1
    assert "OSError: no metadata" in produced.refused[0]
    assert rt.outputs.pending == 0


class _PersistingStore(dict[str, bytes]):
    """A store that keeps changelog offsets, as faust's RocksDB store does."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: list[tuple[Any, int]] = []

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted.append((tp, offset))


def test_a_store_that_keeps_offsets_gets_the_changelog_offset_once_kafka_acknowledged_it(
    tmp_path: Path,
) -> None:
    """RocksDB recovers from the offset it keeps: it is set only after the record is
    acknowledged, and the value is in the store before (never an offset ahead of it)."""
    rt = _engine(tmp_path).runtime
    store = _PersistingStore()
    table = SimpleNamespace(
        name="units", data=store, changelog_topic=SimpleNamespace(get_topic_name=lambda: "cl")
    )

    class Acknowledging:
        def __init__(self) -> None:
            self.deliveries: list[asyncio.Future[Any]] = []

        async def send_batch_tracked(
            self, _topic: str, _partition: int, records: Any
        ) -> list[tuple[asyncio.Future[Any], int]]:
            delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.deliveries.append(delivery)
            return [(delivery, len(records))]

        def refuse_commit(self, reason: str) -> None:
            raise AssertionError(reason)

    producer = Acknowledging()
    rt.outputs = type(rt.outputs)(lambda: producer)

    async def step() -> None:
        with rt.acting_for(_OnPartition(3)):
            rt.put(table, "KNIT-1", b"a")
            rt.put(table, "KNIT-2", b"b")
        await rt.outputs.flush()
        with rt.acting_for(_OnPartition(3)):
            rt.put(table, "KNIT-3", b"c")
        await rt.outputs.flush()
        assert store == {"KNIT-1": b"a", "KNIT-2": b"b", "KNIT-3": b"c"}
        assert store.persisted == []  # not acknowledged yet
        producer.deliveries[0].set_result(SimpleNamespace(offset=41))  # a batch of two
        producer.deliveries[1].set_exception(OSError("not acknowledged"))
        await asyncio.sleep(0)  # the done callbacks run

    asyncio.run(step())
    # The batch's last record (41 + 1): the store recovers from there; the failed batch
    # sets nothing (its flush raises before a commit).
    assert [(tp.topic, tp.partition, offset) for tp, offset in store.persisted] == [("cl", 3, 42)]


def test_a_record_two_of_whose_messages_fail_gets_one_dead_letter(tmp_path: Path) -> None:
    """Two orders' answers in one inbox bundle (one Kafka record) both fail: the record
    is dead-lettered once, with the first error; another record still gets its own."""
    rt = _engine(tmp_path).runtime
    produced = capture_outputs(rt)
    bundle, other = _event(5), _event(6)

    async def fail(items: Sequence[tuple[Any, str]]) -> None:
        raise ValueError(f"answer {items[0][1]} failed")

    async def batch() -> None:
        for event, order in [(bundle, "PO-1"), (bundle, "PO-2"), (other, "PO-3")]:
            await rt.guarded("order-inbox", [(event, order)], fail, lambda item: item[0].message)
        await rt.outputs.flush()  # as the agent does after its batch (`_flush_left`)

    asyncio.run(batch())
    letters = [orjson.loads(v) for _, v in produced.keyed(rt.out.dead_letters)]
    assert [(d["source"]["offset"], d["reason_code"]) for d in letters] == [
        (5, "processing_error"),
        (6, "processing_error"),
    ]
    assert "answer PO-1 failed" in letters[0]["errors"][0]["msg"]
