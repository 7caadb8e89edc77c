"""The worker's producer: a flush before a commit waits for every buffered message.

faust writes table changes to their changelog through its producer buffer and
flushes the producer before committing input offsets. If the flush returns
while changelog writes are still unacknowledged, a worker killed right after
the commit recovers older table values for inputs it will never see again
(the kill-9 replay test caught this in CI). These tests run faust's real
producer against the session's broker; the seam between the buffer and the
broker is slowed or broken to play a busy machine or a failing broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from faust.types import TP, FutureMessage
from kafka.admin import KafkaAdminClient, NewTopic
from mode import Service

from streams.app import create_app
from streams.kafka_transport import ProducerFlushError, seek_to_committed_or_reset

SendPending = Callable[[FutureMessage], Coroutine[Any, Any, None]]


def _run(
    bootstrap: str,
    data_dir: Path,
    topic_name: str,
    wrap: Callable[[SendPending], SendPending],
    *,
    messages: int = 5,
    flush_timeout_s: float | None = None,
) -> list[FutureMessage]:
    """Send `messages` through the buffer with its sender wrapped, flush, return the futures."""

    async def scenario() -> list[FutureMessage]:
        app = create_app("flush-test", bootstrap=bootstrap, partitions=1, data_dir=data_dir)
        producer = app.producer
        if flush_timeout_s is not None:
            producer.flush_timeout_s = flush_timeout_s  # type: ignore[attr-defined]
        producer.buffer._send_pending = wrap(producer.buffer._send_pending)  # type: ignore[attr-defined]
        await producer.start()
        try:
            topic = app.topic(topic_name, key_type=bytes, value_type=bytes)
            futures = [topic.send_soon(key=b"k", value=b"%d" % i) for i in range(messages)]
            await producer.flush()
            return futures
        finally:
            await asyncio.wait_for(producer.stop(), timeout=30)

    return asyncio.run(scenario())


def _create_topic(bootstrap: str, name: str, partitions: int, **config: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=config)], timeout_ms=10_000
        )
    finally:
        admin.close()


def _read_all(
    bootstrap: str, name: str, partitions: int, *, timeout_s: float = 30.0
) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record of `name`, up to its end offsets."""

    async def read() -> list[tuple[int, int, bytes]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await asyncio.wait_for(consumer.start(), timeout=timeout_s)
        try:
            tps = [TopicPartition(name, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            got: list[tuple[int, int, bytes]] = []

            async def behind() -> bool:
                return any([await consumer.position(tp) < end for tp, end in ends.items()])

            async with asyncio.timeout(timeout_s):
                while await behind():
                    for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                        got.extend((tp.partition, r.offset, r.value or b"") for r in records)
            return got
        finally:
            await asyncio.wait_for(consumer.stop(), timeout=timeout_s)

    return asyncio.run(read())


async def _write(bootstrap: str, topic: str, count: int) -> None:
    """`count` records (b"0", b"1", ...) to partition 0 of `topic`, each acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topic, b"%d" % i, partition=0)
    finally:
        await producer.stop()


@pytest.fixture
def topic_name(kafka_bootstrap: str, unique: Callable[[str], str]) -> str:
    name = unique("flush")
    _create_topic(kafka_bootstrap, name, 1)
    return name


def test_flush_waits_for_messages_the_buffer_hands_over_slowly(
    kafka_bootstrap: str, tmp_path: Path, topic_name: str
) -> None:
    """A sender slower than faust's 0.1 s flush poll: every message is acknowledged on return."""

    def slow(send: SendPending) -> SendPending:
        async def send_slowly(fut: FutureMessage) -> None:
            await asyncio.sleep(0.3)  # plays a loaded machine / a full accumulator
            await send(fut)

        return send_slowly

    futures = _run(kafka_bootstrap, tmp_path, topic_name, slow)
    assert [f.done() and not f.cancelled() and f.exception() is None for f in futures] == [True] * 5
    assert sorted(f.result().offset for f in futures) == [0, 1, 2, 3, 4]


def test_flush_refuses_when_a_buffered_message_failed(
    kafka_bootstrap: str, tmp_path: Path, topic_name: str
) -> None:
    def failing(send: SendPending) -> SendPending:
        async def fail_one(fut: FutureMessage) -> None:
            if fut.message.value == b"2":
                fut.set_exception(OSError("broker went away"))
                return
            await send(fut)

        return fail_one

    with pytest.raises(ProducerFlushError, match=r"1 buffered message.*failed.*broker went away"):
        _run(kafka_bootstrap, tmp_path, topic_name, failing)


def test_flush_has_a_deadline_when_a_message_is_never_acknowledged(
    kafka_bootstrap: str, tmp_path: Path, topic_name: str
) -> None:
    def stuck(send: SendPending) -> SendPending:
        async def never(fut: FutureMessage) -> None:
            if fut.message.value != b"0":
                await send(fut)

        return never

    with pytest.raises(ProducerFlushError, match=r"1 buffered message.*not acknowledged.*in 1 s"):
        _run(kafka_bootstrap, tmp_path, topic_name, stuck, flush_timeout_s=1.0)


def test_tracked_sends_keep_faust_s_partitions_and_their_order_and_flush_waits_for_them(
    kafka_bootstrap: str, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    """`send_tracked` (the engine's outputs): where `Topic.send` put a key, in send order."""
    name = unique("tracked")
    _create_topic(kafka_bootstrap, name, 3)
    keys = [b"PO-%d" % (i % 7) for i in range(40)]

    async def scenario() -> tuple[list[Any], list[int]]:
        app = create_app("tracked-test", bootstrap=kafka_bootstrap, partitions=3, data_dir=tmp_path)
        producer = app.producer
        await producer.start()
        try:
            topic = app.topic(name, key_serializer="raw", value_serializer="raw")
            by_faust = [await (await topic.send(key=key, value=b"faust")) for key in keys[:7]]
            futures = [
                await producer.send_tracked(name, key, b"%d" % i, None)  # type: ignore[attr-defined]
                for i, key in enumerate(keys)
            ]
            await producer.flush()
            assert all(f.done() for f in futures)  # flush returned only once all were acknowledged
            return [f.result() for f in futures], [m.partition for m in by_faust]
        finally:
            await asyncio.wait_for(producer.stop(), timeout=30)

    tracked, faust_partitions = asyncio.run(scenario())
    assert [m.partition for m in tracked[:7]] == faust_partitions
    assert len(set(faust_partitions)) > 1
    for partition in set(faust_partitions):
        offsets = [m.offset for m in tracked if m.partition == partition]
        assert offsets == sorted(offsets)  # per partition, in the order sent


def test_batched_sends_keep_fausts_partitions_order_and_offsets_and_flush_waits_for_them(
    kafka_bootstrap: str, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    """`send_batch_tracked` (the engine's step outputs): the key partitioner puts a key
    where `Topic.send` did; a partition's records keep their order, each record's offset is
    its batch's base offset + its index, and one over `max_batch_size` starts a new batch."""
    name = unique("batched")
    _create_topic(kafka_bootstrap, name, 3)
    keys = [b"PO-%d" % (i % 7) for i in range(60)]

    async def scenario() -> tuple[list[int], dict[int, list[tuple[bytes, int]]], int]:
        app = create_app("batched-test", bootstrap=kafka_bootstrap, partitions=3, data_dir=tmp_path)
        producer: Any = app.producer
        await producer.start()
        try:
            topic = app.topic(name, key_serializer="raw", value_serializer="raw")
            by_faust = [await (await topic.send(key=key, value=b"faust")) for key in keys[:7]]
            partition_of = await producer.key_partitioner(name)
            assert [partition_of(key) for key in keys[:7]] == [m.partition for m in by_faust]
            groups: dict[int, list[tuple[bytes, bytes]]] = {}
            for i, key in enumerate(keys):
                # PO-2 twice with 300 kB: over the 512 kB batch, a second batch there
                value = b"%d" % i + (b"x" * 300_000 if i in (30, 37) else b"")
                producer.check_size(key, value)
                groups.setdefault(partition_of(key), []).append((key, value))
            deliveries = {
                p: await producer.send_batch_tracked(name, p, records)
                for p, records in groups.items()
            }
            await producer.flush()
            offsets: dict[int, list[tuple[bytes, int]]] = {}
            for p, placed in deliveries.items():
                assert all(fut.done() for fut, _ in placed)  # flush waited for every batch
                per_record = [
                    fut.result().offset + index for fut, count in placed for index in range(count)
                ]
                offsets[p] = [
                    (value[:3], offset)
                    for (_key, value), offset in zip(groups[p], per_record, strict=True)
                ]
            batches = sum(len(placed) for placed in deliveries.values())
            return [m.offset for m in by_faust], offsets, batches
        finally:
            await asyncio.wait_for(producer.stop(), timeout=30)

    _faust_offsets, offsets, batches = asyncio.run(scenario())
    assert batches == len(offsets) + 1  # the second 300 kB record opened a batch of its own
    stored = _read_all(kafka_bootstrap, name, 3)
    for partition, placed in offsets.items():
        got = [
            (value[:3], offset)
            for p, offset, value in stored
            if p == partition and value != b"faust"
        ]
        assert got == placed  # in the order given, at the offsets the futures name


def test_a_message_the_producer_would_refuse_as_too_large_is_refused_before_any_append(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        app = create_app("size-test", bootstrap=kafka_bootstrap, partitions=1, data_dir=tmp_path)
        producer: Any = app.producer
        await producer.start()
        try:
            producer.check_size(b"k", b"x" * 1000)
            with pytest.raises(MessageSizeTooLargeError, match="max_request_size"):
                producer.check_size(b"k", b"x" * 2_000_000)
        finally:
            await asyncio.wait_for(producer.stop(), timeout=30)

    asyncio.run(scenario())


def test_flush_refuses_when_kafka_refuses_a_tracked_send(
    kafka_bootstrap: str, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    """A delivery Kafka refuses (here: over the topic's message size) stops the commit."""
    name = unique("refused")
    _create_topic(kafka_bootstrap, name, 1, **{"max.message.bytes": "2000"})

    async def scenario() -> None:
        app = create_app("refused-test", bootstrap=kafka_bootstrap, partitions=1, data_dir=tmp_path)
        producer = app.producer
        await producer.start()
        try:
            await producer.send_tracked(name, b"k", b"x" * 10_000, None)  # type: ignore[attr-defined]
            await producer.flush()
        finally:
            await asyncio.wait_for(producer.stop(), timeout=30)

    with pytest.raises(ProducerFlushError, match=r"1 buffered message.*failed.*not committing"):
        asyncio.run(scenario())


def test_a_refused_commit_makes_every_later_flush_raise(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A changelog record the engine could not even append (`refuse_commit`): the
    offsets after it are not committed, nor by a later flush. The flush after it was
    clean again, and a stop (whose first commit's raise is logged, not raised) then
    committed on its next commit and exited 0."""

    async def scenario() -> None:
        app = create_app("refuse-test", bootstrap=kafka_bootstrap, partitions=1, data_dir=tmp_path)
        producer: Any = app.producer
        await producer.start()
        try:
            await producer.flush()
            producer.refuse_commit("changelog record for t-changelog[0] not sent: OSError")
            with pytest.raises(ProducerFlushError, match=r"1 buffered message.*t-changelog"):
                await producer.flush()
            with pytest.raises(ProducerFlushError, match=r"1 buffered message.*t-changelog"):
                await producer.flush()
            assert app.delivery_refused is not None  # the worker's stop exits 1
        finally:
            await asyncio.wait_for(producer.stop(), timeout=30)

    asyncio.run(scenario())


@contextmanager
def _consumer_after_a_rebalance(
    tmp_path: Path, committed: int | None, stale_acks: list[int]
) -> Iterator[Any]:
    """The worker's real consumer with `stale_acks` recorded while the rebalance ran.

    Only the two calls that would reach the broker (the assignment and the
    committed offsets) are answered here: everything else is faust's own code.
    The consumer thread's own event loop, never started here, is closed on exit.
    """
    app = create_app("seek-test", bootstrap="127.0.0.1:1", partitions=1, data_dir=tmp_path)
    consumer: Any = app.consumer
    tp = TP("scans", 0)
    consumer.assignment = lambda: {tp}
    consumer.seek_to_committed = _returning({tp: committed})
    for offset in stale_acks:
        consumer._acked_index[tp].add(offset)
        consumer._acked[tp].append(offset)
    try:
        yield consumer
    finally:
        consumer._thread.thread_loop.close()


def _returning(value: Any) -> Callable[[], Coroutine[Any, Any, Any]]:
    async def call() -> Any:
        return value

    return call


@pytest.mark.parametrize("committed", [None, 3], ids=["nothing-committed", "committed-3"])
def test_acks_of_records_skipped_during_a_rebalance_do_not_move_the_commit(
    tmp_path: Path, committed: int | None
) -> None:
    """Records 3-5 were taken from a queue while the flow was stopped, skipped and acked.

    Processing resumes at the committed offset; before the fix the next commit
    jumped to 6 and records 3-5 were lost to whichever worker owned the
    partition next.
    """
    with _consumer_after_a_rebalance(tmp_path, committed, stale_acks=[3, 4, 5]) as consumer:
        asyncio.run(consumer.perform_seek())
        tp = TP("scans", 0)
        assert consumer._new_offset(tp) is None
        for offset in (0, 1, 2) if committed is None else (3,):
            consumer._acked_index[tp].add(offset)
            consumer._acked[tp].append(offset)
        assert consumer._new_offset(tp) == (3 if committed is None else 4)


def test_the_seek_after_a_rebalance_reads_an_uncommitted_partition_again(
    tmp_path: Path, kafka_bootstrap: str, topic_name: str, unique: Callable[[str], str]
) -> None:
    """faust's seek after a rebalance must read again what it fetched but dropped.

    aiokafka's `seek_to_committed` leaves a partition nobody has committed yet
    where the consumer had read to, so records fetched before the rebalance and
    dropped by faust were never read again; their acks are forgotten at the seek,
    so the partition's commit could never pass them (an inbox partition stayed
    behind for good, workers idle: bench/fleet.py). Here faust's real consumer
    seeks through its thread, handed to a real aiokafka consumer on the broker.
    """
    tp, ktp = TP(topic_name, 0), TopicPartition(topic_name, 0)  # faust's and aiokafka's

    async def scenario() -> tuple[int, int, int, int, int | None]:
        await _write(kafka_bootstrap, topic_name, 6)
        kafka = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=unique("seek"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await kafka.start()
        try:
            kafka.assign([ktp])
            while await kafka.position(ktp) < 6:  # fetched ahead of the streams, as faust does
                await kafka.getmany(ktp, timeout_ms=1000)
            await kafka.seek_to_committed()
            upstream = await kafka.position(ktp)  # aiokafka alone: left at the end
            consumer: Any = create_app(
                "seek-test", bootstrap=kafka_bootstrap, partitions=1, data_dir=tmp_path
            ).consumer
            thread = consumer._thread

            async def on_this_loop(fun: Any, *args: Any) -> Any:
                return await fun(*args)

            thread._ensure_consumer = lambda: kafka
            thread.call_thread = on_this_loop
            consumer._acked[tp].extend([3, 4, 5])  # skipped unhandled while the flow was stopped
            state = kafka._subscription.subscription.assignment.state_value(ktp)
            unset: list[bool] = []

            async def watch() -> None:  # faust's livelock check reads it, asserting it is set
                while True:
                    unset.append(not state.has_valid_position)
                    await asyncio.sleep(0)

            watcher = asyncio.ensure_future(watch())
            await consumer.perform_seek()
            watcher.cancel()
            assert unset
            assert not any(unset), "the position was unset during the seek"
            uncommitted = await kafka.position(ktp)
            kafka.seek(ktp, 6)
            await seek_to_committed_or_reset(kafka, lambda tp: True)  # e.g. a changelog
            positioned_elsewhere = await kafka.position(ktp)
            await kafka.commit({ktp: 2})
            await consumer.perform_seek()
            position = await kafka.position(ktp)
            thread.thread_loop.close()  # the thread's own loop, never started here
            return upstream, uncommitted, positioned_elsewhere, position, consumer._read_offset[tp]
        finally:
            await kafka.stop()

    upstream, uncommitted, elsewhere, committed, read_offset = asyncio.run(
        asyncio.wait_for(scenario(), 45)
    )
    assert upstream == 6, "aiokafka now seeks an uncommitted partition: the override may go"
    assert uncommitted == 0  # read again from the start, as the group's reset policy says
    assert elsewhere == 6  # a changelog (faust positions it at recovery) is left alone
    assert (committed, read_offset) == (2, 2)  # a committed partition: unchanged behaviour


@pytest.mark.parametrize("faust_seeks_first", [True, False], ids=["seek-then-clear", "clear-only"])
def test_records_fetched_while_the_stream_buffers_are_cleared_are_read_again(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_name: str,
    unique: Callable[[str], str],
    faust_seeks_first: bool,
) -> None:
    """Records handed to a stream buffer that faust then clears must be read again.

    After a worker recovers its tables, faust (`Recovery.on_recovery_completed`)
    resumes the stream partitions, seeks them to the committed offsets and only
    then resumes flow control, which empties every stream buffer
    (`FlowControlEvent.resume` -> `clear`). The fetch loop (`_drain_messages`)
    keeps delivering the batch it fetched before the seek meanwhile and moves its
    read offset past it: the records cleared from the buffer are dropped as
    already read ("DROPPED MESSAGE ROFF") when they come again, never processed
    and never acked. With no commit yet the group's commit then jumps past them
    (a record lost: issue 10); with one it can never pass them (a stall with
    everything fetched: issue 14). Here faust's real fetch loop runs over a real
    aiokafka consumer on the broker; the recovery's end is played inside the
    delivery of record 1, where the loop yields to it.
    """
    tp, ktp = TP(topic_name, 0), TopicPartition(topic_name, 0)

    async def scenario() -> tuple[list[int], list[int]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic_name, b"%d" % i, partition=0)
        finally:
            await producer.stop()
        kafka = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=unique("clear"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=4,
        )
        await kafka.start()
        app = create_app("clear-test", bootstrap=kafka_bootstrap, partitions=1, data_dir=tmp_path)
        consumer: Any = app.consumer
        thread = consumer._thread

        async def on_this_loop(fun: Any, *args: Any, **kwargs: Any) -> Any:
            return await fun(*args, **kwargs)

        thread._ensure_consumer = lambda: kafka
        thread.call_thread = on_this_loop
        buffer: Any = app.FlowControlQueue(maxsize=1000, clear_on_resume=True)  # stream buffer
        app.flow_control.resume()
        delivered: list[int] = []
        recovered = False

        async def deliver(message: Any) -> None:  # the conductor: into the stream's buffer
            nonlocal recovered
            delivered.append(message.offset)
            buffer.put_nowait(message.offset)
            if message.offset == 1 and not recovered:  # the recovery ends meanwhile
                recovered = True
                if faust_seeks_first:
                    await consumer.perform_seek()
                app.flow_control.resume()  # empties every stream buffer

        consumer.callback = deliver
        fetcher = Service()
        drain = asyncio.ensure_future(consumer._drain_messages(fetcher))
        try:
            kafka.assign([ktp])
            consumer.resume_partitions({tp})  # as the recovery does when it ends
            deadline = asyncio.get_running_loop().time() + 30
            while delivered[-1:] != [9]:  # the loop has delivered the last record
                assert asyncio.get_running_loop().time() < deadline, (delivered, buffer._queue)
                assert not drain.done(), drain.exception()
                await asyncio.sleep(0.05)
            return delivered, sorted(set(buffer._queue))
        finally:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
            await kafka.stop()
            thread.thread_loop.close()  # the thread's own loop, never started here

    delivered, buffered = asyncio.run(asyncio.wait_for(scenario(), 45))
    assert buffered == list(range(10)), f"delivered {delivered}"


def test_the_seek_after_an_assignment_does_not_wait_behind_an_empty_fetch(
    tmp_path: Path, kafka_bootstrap: str, topic_name: str, unique: Callable[[str], str]
) -> None:
    """The worker's consumer looks up where an uncommitted partition starts on the
    connection its fetches use, and Kafka answers one connection's requests in order:
    with faust's 1.5 s fetch wait every worker start and rebalance waited that long
    behind a fetch of partitions with nothing new (seen in every replay's start-up).
    Here the consumer the worker's thread builds long-polls an empty partition while
    the seek runs."""
    ktp = TopicPartition(topic_name, 0)

    async def scenario() -> tuple[int, float]:
        app = create_app(unique("wait"), bootstrap=kafka_bootstrap, partitions=1, data_dir=tmp_path)
        thread: Any = app.consumer._thread  # type: ignore[attr-defined]
        kafka: AIOKafkaConsumer = thread._create_worker_consumer(app.transport)
        await kafka.start()
        try:
            kafka.assign([ktp])
            assert await kafka.position(ktp) == 0  # reset done: the fetcher now long-polls
            async with asyncio.timeout(10):
                while not kafka._fetcher._in_flight:  # noqa: ASYNC110 (aiokafka's set, no event)
                    await asyncio.sleep(0.01)  # until a fetch is held by the broker
            loop = asyncio.get_running_loop()
            started = loop.time()
            await seek_to_committed_or_reset(kafka)
            return await kafka.position(ktp), loop.time() - started
        finally:
            await kafka.stop()
            thread.thread_loop.close()  # the thread's own loop, never started here

    position, took = asyncio.run(asyncio.wait_for(scenario(), 45))
    assert position == 0
    assert took < 1.0, f"the seek waited {took:.2f} s behind a fetch"


def test_the_consumer_tells_whether_a_partition_holds_records_not_yet_handed_on(
    tmp_path: Path, kafka_bootstrap: str, topic_name: str, unique: Callable[[str], str]
) -> None:
    """What an event-clock worker defers its derivations on (`OrderAgents.settle`):
    records of the order side's topics still to come from what Kafka holds. A wrong
    True could defer them for good, so anything unknown answers False."""
    ktp = TopicPartition(topic_name, 0)

    async def scenario() -> list[bool]:
        await _write(kafka_bootstrap, topic_name, 5)
        consumer: Any = create_app(
            unique("unread"), bootstrap=kafka_bootstrap, partitions=1, data_dir=tmp_path
        ).consumer
        kafka = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=unique("unread"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await kafka.start()
        try:
            consumer._thread._ensure_consumer = lambda: kafka
            answers = [consumer.unread({topic_name})]  # nothing assigned
            kafka.assign([ktp])
            answers.append(consumer.unread({topic_name}))  # no fetch answered yet
            got = await kafka.getmany(ktp, timeout_ms=10_000, max_records=2)
            assert len(got[ktp]) == 2
            answers += [consumer.unread({topic_name}), consumer.unread({"another"})]
            while await kafka.position(ktp) < 5:
                await kafka.getmany(ktp, timeout_ms=10_000)
            answers.append(consumer.unread({topic_name}))
            consumer._thread._ensure_consumer = lambda: None  # broken: never True
            answers.append(consumer.unread({topic_name}))
            consumer._thread.thread_loop.close()  # the thread's own loop, never started here
            return answers
        finally:
            await kafka.stop()

    answers = asyncio.run(asyncio.wait_for(scenario(), 45))
    assert answers == [False, False, True, False, False, False]
