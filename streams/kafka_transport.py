"""faust's aiokafka transport, reading only committed records.

The ingest gateway publishes each request as one Kafka transaction and aborts
it when Kafka fails mid-request, so records of a request answered `503` sit in
the log as aborted. faust reads `read_uncommitted` unless it runs exactly-once
(which we avoid: faust #323, #517); this transport makes the worker's consumer
read `read_committed`, so aborted records never reach the engine. Its producer
is idempotent with acks=all, like every other producer of the project.

Its producer also makes faust's commit durable. faust flushes the producer
before it commits the input offsets - but faust's buffer flush gives up after
0.1 s without a send, and does not wait for the message its sender has just
taken out of the buffer (`send_soon`, the path of faust's own table writes). A
worker killed after such a commit lost table writes whose inputs were
committed: the restarted worker recovered an older value and never saw the
input again. Here `flush` returns only when every message handed over before it
has been acknowledged by Kafka, or raises `ProducerFlushError` (the commit does
not happen; the worker stops with that error and its inputs are processed
again). The engine's outputs and its table changelog records skip faust's
per-message path (`send_batch_tracked`, used by `streams.engine.output_sender.OutputSender`)
and are covered by the same flush; one that cannot even be appended makes the
next flush raise too (`refuse_commit`).

A producer the broker refuses for its batch numbering (OUT_OF_ORDER_SEQUENCE_NUMBER,
seen after a broker restart with a batch in flight, or fenced) is spent: aiokafka keeps
its numbering, so every later batch of that partition is refused the same. The refusal
used to be noted for the next commit's flush only, and a live worker with no input
(deadlines falling due: ticks, no offset to commit) never committed: it stayed ready
while its alerts, snapshots and changelog records were refused. Now a spent producer
makes every later commit raise at once, offsets or none (the worker stops within a
commit interval, `ProducerFlushError` naming the refusal; its restart gets a new
producer id), and nothing is committed after it, its stop's commit included
(`_IdempotentProducer.refused`). So does a clock tick whose delivery fails for any
reason (`refuse_for_good`): no offset depends on a tick, so no commit noticed it, and
the partition's deadlines never fired again. And so does any flush that raised for a
message that failed (a step's alert, snapshot or changelog record Kafka refused, one not
even appended): the worker stops on it anyway, and a stop logs it instead of raising -
its next commit then found the flush clean and the worker exited 0 (a SIGTERM within a
commit interval of the refusal).

Its consumer reads again, after every rebalance, what it had fetched but not
handled - also on a partition nobody has committed yet, which aiokafka's seek to
the committed offsets leaves where it was (`seek_to_committed_or_reset`) - and
again after faust empties the streams' buffers (`flow_control.resume()` at the end
of every recovery, right *after* its seek): records handed to a buffer before
that are read again instead of being dropped as already read. It hands each
record to the streams without faust's four tasks per record
(`streams.eager_delivery`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, FutureMessage, Message
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from schemas.aiokafka_private import spends_producer
from schemas.deadline import deadline
from streams.eager_delivery import EagerDelivery

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "FLUSH_TIMEOUT_S",
    "ChainwatchApp",
    "ClearCountingFlowControl",
    "ProducerFlushError",
    "ReadCommittedTransport",
    "seek_to_committed_or_reset",
]

#: How long a flush before a commit may wait for Kafka to acknowledge the
#: buffered messages (the producer's own request timeout is 20 s by default;
#: this leaves room for retries of a leader change).
FLUSH_TIMEOUT_S = 60.0


#: How long the broker may hold the consumer's fetch while its partitions have no
#: new record (faust hard-codes 1.5 s). Kafka answers one connection's requests in
#: order, and the offset lookup of the seek after every assignment shares the
#: fetch's connection: it waited behind an empty fetch for the whole 1.5 s, at
#: every worker start and rebalance. A fetch returns as soon as a record is there,
#: so this costs nothing under load, and an idle worker a fetch per 0.1 s.
FETCH_MAX_WAIT_MS = 100


class ProducerFlushError(RuntimeError):
    """Buffered messages were not acknowledged in time; offsets must not be committed."""


async def seek_to_committed_or_reset(
    consumer: AIOKafkaConsumer, positioned_elsewhere: Callable[[Any], bool] = lambda tp: False
) -> dict[Any, int | None]:
    """Seek every assigned partition to its committed offset, and one without a commit
    to where the group's reset policy starts it (earliest for the engine).

    `positioned_elsewhere(tp)` names partitions that are never committed and that
    faust positions itself (table changelogs: the recovery seeks them to what the
    table holds); those are left where they are, as aiokafka does.

    aiokafka's `seek_to_committed` leaves a partition without a committed offset
    where the consumer had read to. faust seeks to the committed offsets after
    every rebalance precisely to read again the records it fetched but did not
    handle (it drops them while the flow is stopped); on a partition nobody has
    committed yet - an internal inbox early in a run - those records were never
    read again. Their acks are forgotten at the seek (`perform_seek` below), so
    the partition's commit could never pass them: its lag stayed above zero for
    good with the workers idle (the "stuck" finding of docs/reliability.md).
    Returns the committed offsets, as aiokafka's does.
    """
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    uncommitted = [
        tp
        for tp, offset in committed.items()
        if (offset is None or offset <= 0) and not positioned_elsewhere(tp)
    ]
    if uncommitted:
        # Offsets looked up first, then sought at once: aiokafka's seek_to_beginning
        # leaves the position unset until its reset completes, and faust's livelock
        # check (`verify_event_path`, every 2.5 commit intervals outside a rebalance)
        # asserts on an unset position: a worker crashed so (bench/fleet.py).
        strategy = consumer._fetcher._default_reset_strategy
        starts: dict[Any, int] = {}
        if strategy == OffsetResetStrategy.EARLIEST:
            starts = await consumer.beginning_offsets(uncommitted)
        elif strategy == OffsetResetStrategy.LATEST:
            starts = await consumer.end_offsets(uncommitted)
        assigned = consumer.assignment()
        for tp, offset in starts.items():
            if tp in assigned:  # not revoked meanwhile
                consumer.seek(tp, offset)
    return committed


class _ReadCommittedThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by aiokafka at start()
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # likewise
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """`seek_to_committed_or_reset` on the consumer's thread (an offset may be
        None: no commit, which faust's `perform_seek` expects as aiokafka returns it)."""
        consumer = self._ensure_consumer()
        changelog = self.consumer._is_changelog_tp
        result: Mapping[TP, int] = await self.call_thread(
            seek_to_committed_or_reset, consumer, changelog
        )
        return result


class ClearCountingFlowControl(FlowControlEvent):
    """faust's flow control of the streams' buffers, counting how often it empties them."""

    cleared: int = 0

    def clear(self) -> None:
        super().clear()
        self.cleared += 1


class _ReadCommittedConsumer(EagerDelivery, driver.Consumer):
    _seeks: int = 0
    _clears_seen: int = 0
    _reseek: bool = False

    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    def _buffers_cleared(self) -> int:
        return getattr(self.app.flow_control, "cleared", 0)

    def _left(self, topics: Collection[str]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> records aiokafka has yet to hand to faust, of the
        assigned partitions of `topics` whose position and last stable offset the
        fetches answered so far tell (a record written since may not count).

        Read on the event loop while the consumer's own thread works: aiokafka has no
        synchronous position, so this reads its subscription state (one attribute per
        partition). Raises on anything unexpected, a rebalance changing the
        assignment meanwhile included: the callers choose the answer that costs only
        time where they are used.
        """
        kafka = self._thread._ensure_consumer()
        assignment = kafka._subscription.subscription.assignment
        left: dict[tuple[str, int], int] = {}
        for tp in list(kafka.assignment()):
            if tp.topic not in topics:
                continue
            state = assignment.state_value(tp)
            stable = kafka.last_stable_offset(tp)
            if state is not None and state.has_valid_position and stable is not None:
                left[tp.topic, tp.partition] = max(0, stable - state.position)
        return left

    async def committed_offsets(
        self, partitions: Collection[tuple[str, int]]
    ) -> dict[tuple[str, int], int | None]:
        """The group's committed offset of each (topic, partition), asked of Kafka on
        the consumer's thread (None: no commit), all at once: one after the other, each
        lookup waited behind the consumer's fetch on the same connection (up to
        `FETCH_MAX_WAIT_MS`). Raises as aiokafka does."""
        kafka = self._thread._ensure_consumer()
        keys = list(partitions)

        async def lookup() -> dict[tuple[str, int], int | None]:
            found = await asyncio.gather(*(kafka.committed(TopicPartition(*key)) for key in keys))
            return dict(zip(keys, found, strict=True))

        found: dict[tuple[str, int], int | None] = await self._thread.call_thread(lookup)
        return found

    def unread(self, topics: Collection[str]) -> bool:
        """Whether an assigned partition of `topics` holds records aiokafka has yet to
        hand to faust (`_left`); False when that cannot be read
        (`streams.engine.order_agents.OrderAgents.settle` then only waits longer)."""
        try:
            return any(self._left(topics).values())
        except Exception:
            return False

    def read_to_end(self, topics: Collection[str]) -> set[tuple[str, int]]:
        """(topic, partition) of the assigned partitions of `topics` whose every record
        up to the last stable offset aiokafka has handed to faust, as a fetch of each
        told it (not fetched yet, or to be read again after a seek: not in it); none
        when that cannot be read (a held clock stays held a little longer:
        `streams.engine.clock.EngineClock.hold`)."""
        if self._reseek_pending():
            return set()
        try:
            return {key for key, left in self._left(topics).items() if not left}
        except Exception:
            return set()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 (faust's signature)
        """faust's fetch, never handing on a record the streams' buffers lost.

        faust empties every stream's buffer when it resumes flow control
        (`FlowControlEvent.resume` clears them), and at the end of a recovery it
        does so *after* it has sought the partitions to their committed offsets
        (`Recovery.on_recovery_completed`: resume the stream partitions, seek,
        `flow_control.resume()`). Records the fetch loop (`_drain_messages`)
        handed to a buffer before that clear - a batch fetched before the seek
        that it keeps delivering while the seek runs - are gone unprocessed, yet
        the loop's read offset has moved past them, so when they come again
        they are dropped as already read ("DROPPED MESSAGE ROFF"). Never acked,
        they either let the commit jump past them when the partition has no
        commit yet (a record lost) or keep it behind them for good (a stall with
        every record fetched): docs/reliability.md.

        So after every clear, and after a seek that happened while a batch was
        being delivered, this seeks to the committed offsets again before it
        fetches (the next records are read from there, duplicates are harmless:
        effects are idempotent), and until then it hands on no record of a stream
        partition (a table changelog's records always pass: faust positions those
        itself and they are never read again). Not while the tables recover: the
        stream partitions are paused then, and the recovery ends with a seek and a
        clear of its own.
        """
        ready = self.flow_active and not self.app.in_recovery
        if ready and self._reseek_pending() and not await self._seek_again():
            return
        seeks = self._seeks
        batch = cast(AsyncGenerator[tuple[TP, Message], None], super().getmany(timeout))
        try:
            async for tp, message in batch:
                if (self._seeks != seeks or self._reseek_pending()) and not (
                    self._is_changelog_tp(tp)
                ):
                    self._reseek = True  # read again after the next seek
                    continue
                yield tp, message
        finally:
            await batch.aclose()

    def _reseek_pending(self) -> bool:
        return self._reseek or self._clears_seen != self._buffers_cleared()

    async def _seek_again(self) -> bool:
        clears = self._buffers_cleared()
        try:
            async with deadline(self.app.conf.broker_request_timeout):
                await self.perform_seek()
        except Exception as exc:  # the broker is away: fetch nothing until a seek succeeds
            self.log.warning("seek to the committed offsets failed, retrying: %r", exc)
            await self.sleep(1.0)
            return False
        self._clears_seen, self._reseek = clears, False
        return True

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109 (faust's signature)
        records = await super()._getmany(active_partitions, timeout)
        if records:
            returned = self.returned
            for tp, batch in records.items():  # once per partition and fetch
                if batch:
                    key = (tp.topic, tp.partition)
                    if batch[-1].offset > returned.get(key, -1):
                        returned[key] = batch[-1].offset
        observe = getattr(self.app, "fetch_observer", None)
        if records and observe is not None:  # once per fetch, not per record
            observe(sum(len(batch) for batch in records.values()))
        return records

    @property
    def returned(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the highest offset aiokafka has returned to faust: a
        partition whose records up to it are all stepped is read as far as fetched
        (`streams.engine.runtime.EngineRuntime.order_side_read_to_end`)."""
        known: dict[tuple[str, int], int] | None = self.__dict__.get("_returned")
        if known is None:
            known = self.__dict__["_returned"] = {}
        return known

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """faust's commit, refused once the producer is (`_IdempotentProducer.refused`:
        spent, or a tick not delivered).

        Raises `ProducerFlushError` even with no offset to commit, so the commit timer
        stops the worker within a commit interval (a live worker with no input had none
        to commit, and went on ready while everything it sent was refused). While the
        worker stops (that crash, or a signal: the app's stop commits before the
        consumer's own stop) it commits nothing and does not raise - nor when the flush
        before the stop's commit raises: a raise in the stop skipped the stop of the
        consumer's thread, which kept the process alive.
        """
        stopping = self.should_stop or self.app.should_stop  # the app's stop: before ours
        refused = cast(ChainwatchApp, self.app).delivery_refused
        if refused is not None:
            if stopping:
                self.log.warning("not committing offsets while stopping: %s", refused)
                return False
            raise ProducerFlushError(f"{refused}; not committing offsets, the worker stops")
        try:
            committed: bool = await super().commit(topics, start_new_transaction)
        except ProducerFlushError as exc:
            if not stopping:
                raise
            self.log.warning("not committing offsets while stopping: %s", exc)
            return False
        return committed

    async def perform_seek(self) -> None:
        """Seek to the committed offsets and forget every ack taken before the seek.

        During a rebalance faust's streams still take prefetched records from
        their queues, skip them (flow stopped, or an older generation) and *ack*
        them unprocessed. An ack recorded after the revocation cleared the
        bookkeeping survives into the new assignment, and the next commit moves
        the group's offset past records nobody handled: a later owner of the
        partition never sees them (the "skipped records" of docs/reliability.md).
        Processing restarts at the committed offset after this seek (at the
        start of a partition without a commit: `seek_to_committed_or_reset`), so no ack
        from before it is needed: a record handled twice is harmless (effects
        are idempotent), a record skipped is lost.
        """
        await super().perform_seek()
        self._seeks += 1
        for tp in self.assignment():
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._gap.pop(tp, None)


class _IdempotentProducer(driver.Producer):
    """acks=all and idempotence on every send (faust turns them on only in exactly_once).

    Without idempotence a produce retried after a lost acknowledgement (a broker
    or leader change, routine on a cluster) writes the record twice.
    """

    flush_timeout_s: float = FLUSH_TIMEOUT_S

    def __post_init__(self) -> None:
        super().__post_init__()
        self._unacknowledged: set[asyncio.Future[Any]] = set()
        """Messages and batches handed over (buffer, `send_tracked`, `send_batch_tracked`)
        and not yet acknowledged by Kafka."""
        self._failed: list[str] = []
        self.refused: str | None = None
        """Why nothing may be committed any more: the broker refuses
        this producer's batches for good (`spends_producer`), a tick was not delivered
        (`refuse_for_good`), or a flush raised for a message that failed (`flush`). Every
        later flush and commit raises, none is committed (the worker stops, exit 1)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}

    def send_soon(self, fut: FutureMessage) -> None:
        self._track(fut)
        super().send_soon(fut)

    async def send_tracked(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None
    ) -> asyncio.Future[Any]:
        """Append one message to the aiokafka producer's accumulator; the next flush waits for it.

        The message goes straight to the `AIOKafkaProducer` that faust's own sends
        and changelog writes use (same partitioner, same per-partition batches),
        without faust's per-message path (`FutureMessage`, sensors, callbacks),
        which cost more than aiokafka's own append. It is in the accumulator when
        this returns, so sends awaited one after the other keep their order per
        partition. Its delivery future is tracked like a buffered message: `flush`
        (before every commit) waits for it and raises if it failed. An error while
        appending (no metadata in time, a message over `max_request_size`) raises here.
        """
        fut: asyncio.Future[Any] = await self._ensure_producer().send(
            topic, value, key=key, partition=partition
        )
        self._track(fut)
        return fut

    async def key_partitioner(self, topic: str) -> Callable[[bytes | None], int]:
        """Where the producer's partitioner puts a key on `topic` (waits for its metadata).

        The same choice `send` makes for a message without a partition (faust's
        `producer_partitioner`, murmur2 of the key), for `send_batch_tracked`.
        """
        producer = self._ensure_producer()
        await producer.client._wait_on_metadata(topic)
        partitions = sorted(producer.client.cluster.partitions_for_topic(topic) or ())
        available = sorted(producer.client.cluster.available_partitions_for_topic(topic) or ())
        choose = producer._partitioner

        def partition_of(key: bytes | None) -> int:
            return int(choose(key, partitions, available))

        return partition_of

    def check_size(self, key: bytes | None, value: bytes | None) -> None:
        """Raise `MessageSizeTooLargeError` for a message `send` would refuse as too large."""
        producer = self._ensure_producer()
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
        if size > producer._max_request_size:
            raise MessageSizeTooLargeError(
                f"the message is {size} bytes, over the producer's max_request_size"
                f" ({producer._max_request_size})"
            )

    async def send_batch_tracked(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[asyncio.Future[Any], int]]:
        """Append `records` to `topic[partition]` in order, as whole record batches.

        What `send_tracked` does for one message, for many at once: aiokafka's
        `create_batch`/`send_batch` build one batch per `max_batch_size` and give one
        delivery future per batch, not one per message (a future, a `RecordMetadata`
        and a callback per message cost more than the append itself). Same records
        as `send`: the producer's timestamp, no headers, the idempotent producer's
        sequence numbers. Each batch's future is tracked (`flush` waits for it).
        Returns (delivery future, records) per batch, in order: a record's offset is
        its batch's base offset + its index in the batch. Raises if a batch cannot
        be appended; batches appended before that stay appended.
        """
        producer = self._ensure_producer()
        batches: list[tuple[asyncio.Future[Any], int]] = []
        builder = producer.create_batch()
        for key, value in records:
            if builder.append(timestamp=None, key=key, value=value) is None:
                # Full: send it; the record opens the next one (a first record always fits).
                batches.append(await self._append_batch(builder, topic, partition))
                builder = producer.create_batch()
                builder.append(timestamp=None, key=key, value=value)
        if builder.record_count():
            batches.append(await self._append_batch(builder, topic, partition))
        return batches

    async def _append_batch(
        self, builder: Any, topic: str, partition: int
    ) -> tuple[asyncio.Future[Any], int]:
        fut: asyncio.Future[Any] = await self._ensure_producer().send_batch(
            builder, topic, partition=partition
        )
        self._track(fut)
        return fut, builder.record_count()

    def refuse_commit(self, reason: str) -> None:
        """Make the next `flush` raise, and every later one (`refused`): a message the
        offsets depend on was not sent."""
        self._failed.append(reason)

    def refuse_for_good(self, reason: str) -> None:
        """Make every later flush and commit raise, offsets or none (`refused`): a message
        no offset depends on (a tick) was not delivered, so no commit would notice it;
        the commit timer stops the worker within a commit interval."""
        if self.refused is None:
            self.refused = reason
            self.log.error("worker stops: %s", reason)

    def _track(self, fut: asyncio.Future[Any]) -> None:
        self._unacknowledged.add(fut)
        fut.add_done_callback(self._settle)

    def _settle(self, fut: asyncio.Future[Any]) -> None:
        self._unacknowledged.discard(fut)
        if fut.cancelled():
            self._failed.append("cancelled")
        elif (exc := fut.exception()) is not None:
            self._failed.append(f"{type(exc).__name__}: {exc}")
            if spends_producer(exc) and self.refused is None:
                self.refused = (
                    f"the broker refuses the worker's producer ({type(exc).__name__}: {exc}):"
                    " nothing it sends is taken any more, a restart gets a new producer id"
                )
                self.log.error("producer spent: %s", self.refused)

    async def flush(self) -> None:
        """Return once every message buffered before the call is acknowledged by Kafka.

        Raises `ProducerFlushError` if one is still unacknowledged after
        `flush_timeout_s`, or if one failed since the last flush: either way the
        offsets that follow must not be committed. Once the producer is `refused`, always;
        a failed one makes it so (one still unacknowledged may yet be delivered: a later
        flush waits for it again).
        """
        if self.refused is not None:
            raise ProducerFlushError(f"{self.refused}; not committing offsets")
        await super().flush()
        waiting = [fut for fut in self._unacknowledged if not fut.done()]
        if waiting:
            _done, late = await asyncio.wait(waiting, timeout=self.flush_timeout_s)
            if late:
                raise ProducerFlushError(
                    f"{len(late)} buffered message(s) (changelog writes, engine outputs) not"
                    f" acknowledged by Kafka within {self.flush_timeout_s:.0f} s;"
                    " not committing offsets"
                )
        if self._failed:
            failed, self._failed = self._failed, []
            reason = (
                f"{len(failed)} buffered message(s) (changelog writes, engine outputs) failed,"
                f" first: {failed[0]}"
            )
            # for good: a stop swallows this raise (its commit, its flush), and a commit
            # after it passed the inputs of what was refused (exit 0, never sent again)
            self.refuse_for_good(reason)
            raise ProducerFlushError(f"{reason}; not committing offsets")


class ReadCommittedTransport(driver.Transport):
    Consumer = _ReadCommittedConsumer
    Producer = _IdempotentProducer


class ChainwatchApp(faust.App):
    """A faust App whose worker consumer reads committed records only."""

    fetch_observer: Callable[[int], None] | None = None
    """Called with the number of records of each non-empty fetch (the worker's metrics)."""

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """faust's flow control of the streams' buffers; the consumer reads again
        whatever they held when it empties them (`_ReadCommittedConsumer.getmany`)."""
        return ClearCountingFlowControl(loop=self.loop)

    @property
    def delivery_refused(self) -> str | None:
        """Why nothing may be committed any more (`_IdempotentProducer.refused`: a spent
        producer, a tick or an output not delivered), or None; None too before faust made
        its producer (`_producer`: reading `producer` would make one)."""
        refused: str | None = getattr(self._producer, "refused", None)
        return refused

    async def _producer_flush(self, logger: Any) -> None:
        """faust's flush at the app's stop; a refusal (a spent producer, a tick or an
        output not delivered) is logged, not raised: a raise here skipped the stop of the
        app's children (the consumer's thread ran on, and the process never exited).
        Nothing is committed after it (`_ReadCommittedConsumer.commit`)."""
        try:
            await super()._producer_flush(logger)
        except ProducerFlushError as exc:
            logger.error("producer buffer not flushed at stop: %s", exc)

    def _new_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_consumer, self, loop=self.loop)
