"""What the order, customer and unit parts of the engine share on one faust app.

The topics and tables, the clock and deadline index, the one lock that makes a
worker's agents take turns, and the shared steps: dead letters (never a silent
drop), encoded table values (never over the size limit); every output goes out
through `output_sender.OutputSender`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, TypeVar, cast

import faust
import orjson
import structlog
from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event, current_event
from faust.types import TP

from schemas.dead_letter import DeadLetter, DeadLetterSource, ErrorDetail, ReasonCode
from schemas.deadline import deadline
from schemas.placement import Misplaced, misplaced
from schemas.plan import SlaPlan
from schemas.validation import RecordRejected, check_key
from streams.codecs import InputCodec, InputSchema, Rejected
from streams.eager_delivery import deliver_in_bulk
from streams.engine import tables
from streams.engine.batching import BatchSizes, take_growing
from streams.engine.clock import DeadlineIndex, EngineClock
from streams.engine.errors import error_text
from streams.engine.forwarding import ForwardLog
from streams.engine.limits import EngineLimits
from streams.engine.messages import (
    CUSTOMER_INBOX,
    ORDER_INBOX,
    UNIT_INBOX,
    JoinMessage,
)
from streams.engine.metrics import EngineMetrics, TopicMeters
from streams.engine.output_sender import OutputSender, Persisted, TrackedProducer
from streams.kafka_transport import ChainwatchApp
from streams.partitioning import partition_of
from streams.topics import (
    ALERTS,
    APPEND_TIME_TOPICS,
    CUSTOMERS,
    DEAD_LETTER,
    ORDER_STATE,
    ORDERS,
    SCANS,
    UNIT_STATUS,
    TopicNames,
)

log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    names: TopicNames
    plan: SlaPlan
    clock: Literal["live", "event"] = "live"
    snapshots: bool = True
    tick_interval_s: float = 0.2
    limits: EngineLimits = field(default_factory=EngineLimits)
    batch_size: int = 2000
    """At most this many records of one agent are taken at a time (`take_events`)."""
    batch_within_s: float = 0.2
    """How long an agent waits for a batch to fill before it takes what it has.

    faust's streams move one record into a batch per turn of the event loop, and a
    loaded worker's turns are long (other agents' steps): with 0.02 s the engine's
    batches held ~50 records and it paid each batch's fixed costs (flush, bundles,
    deadlines) that often. 0.2 s gave batches of ~800 under load, and kept the
    deadline latency's p99 at ~0.24 s at 250 records/s
    (docs/performance-engine-history.md, "Four tasks per record").
    """
    batch_most: int = 2000
    """Above `batch_size`: batches grow to this while they fill (`take_growing`; the
    event clock's workers, whose latency no deadline waits on)."""
    drained_commit_timeout_s: float = 120.0
    """The deadline of an event-clock worker's commit of what it drained (`_commit_drained`):
    above one request's own (faust's `broker_request_timeout`, 90 s), so a slow answer is
    not cut; aiokafka's commit retries for ever while the group's coordinator is away."""
    defer_derivations: bool = False
    """Derive an order once while a backlog lasts, not once per batch
    (`OrderAgents.settle`; the event clock's workers: nothing waits on their alerts
    before their inputs are drained)."""


class CommitTimedOut(Exception):
    """A commit of the worker's acked offsets did not end within its deadline."""


class ValueTooLarge(Exception):
    """A table value over `EngineLimits.max_value_bytes` (never written)."""


T = TypeVar("T")

Handler = Callable[[Sequence[Any]], Awaitable[None]]
"""An agent's step: one batch of faust events of its topic, in arrival order."""


COMMITTED_LOOKUP_S = 10.0
"""The longest a recovery waits for the committed offsets (`committed_offsets`)."""

RECOVERY_FLUSH_EVERY = 5_000
"""Outputs collected by a long pass over many orders (the alerts re-announced after
a recovery, the derivations a replay's worker owed: `OrderAgents.settle`) are
flushed every this many, so a worker owning many orders does not hold them all in
memory first."""


@dataclass(frozen=True)
class OutputTopics:
    """The Kafka names of the topics the engine publishes to."""

    alerts: str
    state: str
    dead_letters: str
    order_inbox: str
    customer_inbox: str
    unit_inbox: str


class EngineRuntime:
    """Topics, tables and shared steps of one engine on one faust app."""

    def __init__(self, app: faust.App, config: EngineConfig) -> None:
        self.app = app
        self.config = config
        self.partitions = int(app.conf.topic_partitions)
        """Partitions of every topic the engine reads and joins through, read once: the
        hot path asks per record where a key belongs (`home`), and reading faust's
        settings object for it cost about a microsecond each time."""
        self.plan = config.plan
        # a held clock follows the Kafka timestamps of the topics the broker stamps
        self.clock = EngineClock(config.clock, held_topics=tuple(sorted(APPEND_TIME_TOPICS)))
        self.deadlines = DeadlineIndex()
        self.turn = asyncio.Lock()
        """One event at a time per worker: agents share the tables (module docs of agents)."""
        self.metrics = EngineMetrics()
        """This engine's own Prometheus registry and counters (streams.engine.metrics)."""
        if isinstance(app, ChainwatchApp):
            app.fetch_observer = self.metrics.fetch_records.observe
        self._letters: dict[tuple[str, int | None, int], bool] = {}
        self._waiting: Any = None
        """The queue of the stream whose step runs (`backlog`)."""
        """The inputs dead-lettered during the current batch, (logical topic, partition,
        offset) -> whether as `processing_error` (each record's outcome metric)."""
        self._forwarded: set[tuple[str, int, int]] = set()
        """The inputs forwarded to their id's partition during the current batch (`forward`)."""
        self._forward_log = ForwardLog()
        self._stepped: dict[tuple[str, int], int] = {}
        """Live clock: (topic, partition) -> the highest offset stepped on the order side
        (`order_side_read_to_end`)."""

        self.scans_topic = self._input(SCANS)
        self.orders_topic = self._input(ORDERS)
        self.customers_topic = self._input(CUSTOMERS)
        self.unit_status_topic = self._input(UNIT_STATUS)
        self.order_inbox = self._internal(ORDER_INBOX)
        self.customer_inbox = self._internal(CUSTOMER_INBOX)
        self.unit_inbox = self._internal(UNIT_INBOX)
        self._order_side = frozenset(
            t.get_topic_name() for t in (self.scans_topic, self.orders_topic, self.order_inbox)
        )
        read = [self.customers_topic, self.unit_status_topic, self.customer_inbox, self.unit_inbox]
        self._read_topics = self._order_side | {t.get_topic_name() for t in read}
        self.alerts_topic = self._output(ALERTS)
        self.state_topic = self._output(ORDER_STATE)
        self.dead_letter_topic = self._output(DEAD_LETTER)
        self.out = OutputTopics(
            alerts=self.alerts_topic.get_topic_name(),
            state=self.state_topic.get_topic_name(),
            dead_letters=self.dead_letter_topic.get_topic_name(),
            order_inbox=self.order_inbox.get_topic_name(),
            customer_inbox=self.customer_inbox.get_topic_name(),
            unit_inbox=self.unit_inbox.get_topic_name(),
        )
        self.outputs = OutputSender(lambda: cast(TrackedProducer, app.producer))
        """Every output is sent through this one (see `OutputSender`)."""
        self._changelogs: dict[tuple[str, int], tuple[str, Persisted | None]] = {}
        """(table name, partition) -> its changelog topic and offset keeper (`put`)."""

        self.order_table = self._table(tables.ORDERS)
        self.customer_table = self._table(tables.CUSTOMERS)
        self.subscription_table = self._table(tables.SUBSCRIPTIONS)
        self.unit_table = self._table(tables.UNITS)
        self.occupancy_table = self._table(tables.OCCUPANCY)

    # --- declaration ------------------------------------------------------------

    def _input(self, name: str) -> Any:
        return self.app.topic(
            self.config.names(name), schema=InputSchema(InputCodec(name, self.plan))
        )

    def _internal(self, name: str) -> Any:
        return self.app.topic(
            f"{self.app.conf.id}-{name}",
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
            partitions=self.app.conf.topic_partitions,
        )

    def _output(self, name: str) -> Any:
        return self.app.topic(self.config.names(name), key_serializer="raw", value_serializer="raw")

    def _table(self, name: str) -> Any:
        return self.app.Table(name, key_type=str, value_type=bytes)

    def agent(self, topic: Any, name: str, handle: Handler, logical_topic: str) -> None:
        """A faust agent that hands batches of events to `handle`, one batch at a time per worker.

        An exception never leaves the agent: faust would log it and commit past
        the records (a silent drop). The records are dead-lettered instead with
        `processing_error` and the error text (CONTRACT v1.2), and the worker goes on.
        Each record is counted by outcome and timed (`chainwatch_worker_records`,
        `chainwatch_worker_processing_seconds`).
        """
        self.app.agent(topic, name=name, concurrency=1)(self.agent_body(handle, logical_topic))

    def agent_body(self, handle: Handler, logical_topic: str) -> Any:
        """Batch-at-a-time: `take_events` gives up to `batch_size` events (acked after the step).

        A batch is handled under the worker's lock (`turn`). If handling it raises,
        each event is handled again on its own and only those that still raise are
        dead letters: every step is idempotent (redelivery is), see `guarded`.
        The outputs a step collects (alerts, snapshots, dead letters, changelog
        records, join messages: `OutputSender`) are sent when it ends, as record
        batches, before `take_events` acks its inputs. What a step collected
        before it raised is kept and sent with the retry's: the state it came from
        is already stored, so a retry may not produce it again; a message sent twice
        is harmless (join messages are versioned or idempotent, streams.engine.messages;
        alerts and snapshots are versioned; dead letters have ids).
        Each record of the batch is counted by its outcome, and timed as its share
        of the batch (the batch's time divided by its records).
        """
        sizes = BatchSizes(
            self.config.batch_size, max(self.config.batch_size, self.config.batch_most),
            self.config.batch_within_s,
        )  # fmt: skip
        meters = self.metrics.for_topic(logical_topic)
        clock = time.perf_counter
        event_clock = self.config.clock == "event"

        async def step(events: Sequence[Any]) -> None:
            await handle(events)
            await self.outputs.flush()  # what it collected, as record batches

        async def agent(stream: Any) -> AsyncIterator[None]:
            drained = False

            async def commit_if_drained() -> None:
                nonlocal drained
                if drained:
                    drained = False
                    await self._commit_drained()

            channel = getattr(stream, "channel", None)
            waiting = getattr(channel, "queue", None)
            read = frozenset(getattr(channel, "topics", None) or ())
            # what a held live clock reads (`order_side_read_to_end`); never on the event clock
            note_stepped = not event_clock and bool(read & self._order_side)

            def nothing_to_read() -> bool:  # for this agent (a batch is taken at once)
                return event_clock and self._left_to_read(waiting, read) is False

            if sizes.grows:  # every agent of the worker takes its records in bulk
                deliver_in_bulk(self.app)
            batches = (
                take_growing(stream, sizes, commit_if_drained, nothing_to_read)
                if sizes.grows
                else stream.take_events(sizes.first, sizes.within_s)
            )
            async for events in batches:
                async with self.turn:
                    self._waiting = waiting
                    current = [e for e in events if self.owned(e.message)]
                    if current:
                        self._letters.clear()
                        self._forwarded.clear()
                        started = clock()
                        await self.guarded(logical_topic, current, step, lambda e: e.message)
                        await self._flush_left()
                        self._count(meters, logical_topic, current, clock() - started)
                        drained = event_clock and self.drained()
                    self.forget_stale(events)  # before take_events acks the batch
                    if note_stepped:
                        self._note_stepped(events)
                yield None

        return agent

    def backlog(self) -> bool:
        """Whether order records are still to come from what Kafka holds already: some
        wait in the queue of the agent whose step runs, or its consumer has yet to hand
        on some of a partition of the order side's topics it owns."""
        return self._left_to_read(self._waiting, self._order_side) is True

    def drained(self) -> bool:
        """Whether the worker has read all Kafka holds for it: nothing waits in the queue
        of the agent whose step runs, and its consumer has handed on every record of the
        partitions it owns, of every topic it reads (unknown: not drained)."""
        return self._left_to_read(self._waiting, self._read_topics) is False

    def _note_stepped(self, events: Sequence[Any]) -> None:
        stepped = self._stepped
        for event in events:
            message = event.message
            key = (message.topic, message.partition)
            if message.offset > stepped.get(key, -1):
                stepped[key] = message.offset

    async def committed_offsets(
        self, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int | None] | None:
        """The group's committed offset of each (topic, partition) (None: no commit),
        asked of Kafka; None when that cannot be known (no Kafka consumer, the lookup
        failed or took over `COMMITTED_LOOKUP_S`): the caller assumes nothing committed."""
        lookup = getattr(self.app._consumer, "committed_offsets", None)
        if lookup is None or not partitions:
            return None
        try:
            async with deadline(COMMITTED_LOOKUP_S):
                found: dict[tuple[str, int], int | None] = await lookup(partitions)
        except Exception as exc:
            log.warning("committed_offsets_unknown", error=error_text(exc))
            return None
        return found

    def order_side_read_to_end(self) -> set[tuple[str, int]]:
        """(logical topic, partition) of the order side whose every record Kafka held,
        when the consumer last fetched it, has been stepped: the consumer read the
        partition to its end (`read_to_end`: nothing left in Kafka or in aiokafka's
        buffers) and every record it returned to faust up to there has been through
        a step (none waits in faust's fetch loop, a stream's queue or a batch being
        gathered)."""
        consumer = self.app._consumer
        read_to_end = getattr(consumer, "read_to_end", None)
        returned: dict[tuple[str, int], int] = getattr(consumer, "returned", {})
        if read_to_end is None:
            return set()
        logical = {
            self.scans_topic.get_topic_name(): SCANS,
            self.orders_topic.get_topic_name(): ORDERS,
            self.order_inbox.get_topic_name(): ORDER_INBOX,
        }
        stepped = self._stepped
        return {
            (logical[name], partition)
            for name, partition in read_to_end(self._order_side)
            if name in logical
            and stepped.get((name, partition), -1) >= returned.get((name, partition), -1)
        }

    def _left_to_read(self, waiting: Any, topics: frozenset[str]) -> bool | None:
        """Whether records wait in `waiting` (a stream's queue) or unread in Kafka on the
        partitions of `topics` the worker owns; None when that is unknown (no topics, no
        consumer built: faust's `app.consumer` would build one where there is none)."""
        if waiting is not None and not waiting.empty():
            return True
        unread = getattr(self.app._consumer, "unread", None)
        if unread is None or not topics:
            return None
        return bool(unread(topics))

    async def _commit_drained(self) -> None:
        """Commit what the agents acked now, not at the next tick of the commit timer.

        A replay publishes its next event-time window once the group has committed
        every record of this one (`chainwatch.replay.wait_until_idle`), so each
        window's end waited for the timer: 0.2 s in a replay, twice that when its
        last join answers came after a tick. An event-clock worker commits as soon
        as a step leaves it with nothing to read (`drained`), after that step's
        batch is acked (`take_growing`'s `after_ack`). It is faust's own commit
        (`Consumer.commit`: the producer's flush first, which never lets an offset
        past an output Kafka has not acknowledged, then the offsets, one commit at
        a time). One that raises stops the worker as the timer's does.

        Nothing bounded it (aiokafka's commit retries for ever while the coordinator
        is away), and the agent waited in it. It now has `drained_commit_timeout_s`;
        one that outlasts it stops the worker as a failed one does (logged as
        `drained_commit_timed_out`, then faust's crash): it cannot be left to the
        timer, because faust takes the offsets it commits out of its acked list before
        the commit, so an abandoned commit left a gap that no later commit of the
        partition would pass (`Consumer._new_offset`). The restarted worker reads again
        what was not committed, as after any crash (the engine's steps are idempotent
        under redelivery, so a replay's alerts are the same).
        """
        consumer = self.app.consumer
        timeout_s = self.config.drained_commit_timeout_s
        try:
            async with deadline(timeout_s):
                await consumer.commit()
        except TimeoutError:
            log.error(
                "drained_commit_timed_out",
                timeout_s=timeout_s,
                hint="is Kafka answering? the worker stops; what was not committed is "
                "read again on restart",
            )
            await consumer.crash(
                CommitTimedOut(f"the commit of drained offsets took over {timeout_s:g} s")
            )
        except Exception as exc:
            await consumer.crash(exc)

    async def _flush_left(self) -> None:
        """Send what a batch's last failing retry collected before it raised.

        Those messages come from state already stored. If the producer refuses them
        too, they cannot be kept for a later step (the batch's inputs are acked
        now), so the commit is refused instead: the next flush before a commit
        raises, nothing after the last commit is committed, the worker stops, and
        its inputs are read again on restart. A redelivered input announces its
        joins again (the order side re-subscribes and re-reports its occupancy,
        the customer and unit sides answer again, every message versioned), so
        what was not sent is sent then.
        """
        if not self.outputs.pending:
            return
        try:
            await self.outputs.flush()
        except Exception as exc:
            dropped, error = self.outputs.discard(), error_text(exc)
            log.error("outputs_not_sent", messages=dropped, error=error)
            self.outputs.refuse_commit(f"{dropped} output(s) not sent: {error}")

    def _count(
        self, meters: TopicMeters, logical_topic: str, events: Sequence[Any], seconds: float
    ) -> None:
        """Each record's outcome (a dead letter naming it was sent, it was forwarded) and its
        share of the time."""
        letters, forwarded, share = self._letters, self._forwarded, seconds / len(events)
        ok = 0
        for event in events:
            message = event.message
            where = (logical_topic, message.partition, message.offset)
            failed = letters.get(where)
            if failed is None:
                if forwarded and where in forwarded:
                    meters.forwarded.inc()
                else:
                    ok += 1
            elif failed:
                meters.processing_error.inc()
            else:
                meters.dead_lettered.inc()
            meters.seconds.observe(share)
        if ok:
            meters.ok.inc(ok)

    async def guarded(
        self,
        logical_topic: str,
        items: Sequence[T],
        step: Callable[[Sequence[T]], Awaitable[None]],
        message_of: Callable[[T], Any],
    ) -> None:
        """Run `step` over `items`; if it raises, over each item alone, dead-lettering failures.

        Re-running items that were already (partly) applied is what a redelivery
        does, and every step of the engine is idempotent under redelivery.
        """
        items = [item for item in items if self.owned(message_of(item))]
        if not items:
            return
        try:
            await step(items)
        except Exception as exc:  # every failure is a dead letter
            if len(items) == 1:
                self.processing_error(logical_topic, message_of(items[0]), exc)
                return
            log.warning("batch_step_failed", topic=logical_topic, error=error_text(exc))
            for item in items:
                await self.guarded(logical_topic, [item], step, message_of)

    def owned(self, message: Any) -> bool:
        """Whether `message` was fetched in the group's current generation.

        faust's own per-record iterator skips a message of an older generation (one
        fetched before a rebalance); a batch holds messages for a while, so the same
        check is made when each key's records are handled, and a stale one is left
        to the partition's owner (it is read again from the committed offset): its
        effects, computed from this worker's copy of the state, could overtake the
        owner's.

        Unlike faust's iterator this does not skip a message while the flow is
        stopped: a batch taken before a rebalance is handled while its partitions
        are being revoked, as faust handles a record it took before the flow
        stopped - the revocation waits for every taken message to be acked
        (`stream_wait_empty`), then commits. Skipping it there acked it unhandled
        and that commit moved past it: the record was lost (the likely cause of a
        customer answer missing in the 2-worker replay of the first batched engine).
        """
        generation = getattr(message, "generation_id", None)
        if generation is None:  # not a consumer's message (tests)
            return True
        return bool(generation == self.app.consumer_generation_id)

    def forget_stale(self, events: Sequence[Any]) -> None:
        """Keep `take_events` from acking the events this worker left unhandled.

        An ack marks the offset safe to commit; a stale event's offset is not (it is
        read again from the committed offset), so it is marked acked on the message
        itself, which makes the stream's ack a no-op, and dropped from the messages
        the consumer waits for before a revocation commits.
        """
        stale = [event.message for event in events if not self.owned(event.message)]
        if not stale:
            return
        unacked = getattr(self.app.consumer, "_unacked_messages", None)
        for message in stale:
            message.acked = True
            if unacked is not None:
                unacked.discard(message)

    async def each(
        self, logical_topic: str, events: Sequence[Any], handle: Callable[[Any], Awaitable[None]]
    ) -> None:
        """Handle a batch one event at a time (each as faust's current event, each guarded)."""

        async def one(batch: Sequence[Any]) -> None:
            for event in batch:
                with self.acting_for(event):
                    await handle(event)

        for event in events:
            await self.guarded(logical_topic, [event], one, lambda e: e.message)

    @staticmethod
    @contextmanager
    def acting_for(event: Any) -> Iterator[None]:
        """Make `event` faust's current event while one key's table values are used.

        faust takes the partition of a table write (the changelog partition, and
        with RocksDB the database written) and of a RocksDB read from the *current
        event*: a context variable, `faust.streams._current_event`, that faust's
        stream iterator sets for each record in the task iterating the stream.
        `take_events` iterates the stream in a background task and hands the agent
        a list, so the agent's own task has no current event (a table write would
        raise). The records of one key share its partition, so any one event of
        the key (the agents pass the last) stands for all of them while that key is
        read, written and its effects sent; the variable is then reset to what it
        was (the token), so nothing leaks to the next key. The variable is
        per task, so awaiting inside is safe. faust's public API has no setter for
        it (`Stream._set_current_event` also touches the stream), hence this one.
        """
        token = _current_event.set(weakref.ref(event))
        try:
            yield
        finally:
            _current_event.reset(token)

    def active_partitions(self, topic: Any) -> set[int]:
        name = topic.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}

    def partition_of(self, key: str) -> int:
        """The partition of a key under the default (murmur2) partitioner of every producer."""
        return partition_of(key.encode(), self.partitions)

    def home(self, key: bytes) -> int:
        """`partition_of` for key bytes: where an input record of that id must be read from."""
        return partition_of(key, self.partitions)

    def join(self, topic: str, message: JoinMessage) -> None:
        """Send `message` to its receiver's inbox, bundled at the end of the step (`OutputSender`).

        Only an agent step flushes: this is for the agents' handlers, not timers.
        """
        self.outputs.join(topic, partition_of(message.key(), self.partitions), message.encode())

    # --- shared steps -------------------------------------------------------------

    @staticmethod
    def get(table: Any, key: str) -> bytes | None:
        """A table value (None: none), read from the table's store as `put` writes it.

        faust's `table.get(key)` goes through `Mapping.get`, the managed dict's
        `on_key_get` (faust's table-read sensors, which the engine does not use) and
        the user dict's `__missing__` test before it reaches the store: about twice the
        store's own read, once or more per key and step. Same store, same value: for
        agent steps (a key's event current, `acting_for`, as RocksDB reads need).
        """
        value: bytes | None = table.data.get(key)
        return value

    def put(self, table: Any, key: str, value: bytes) -> None:
        """Write a table value: to the store at once, to the changelog when the step ends.

        faust's `table[key] = value` sends one changelog record per write through
        its per-message path; `OutputSender.change` says what is sent instead. For
        agent steps only (a key's event current, `acting_for`): the step's flush
        sends the record before the step's inputs can be committed.
        """
        table.data[key] = value
        self._changelog(table, key, value)

    def delete(self, table: Any, key: str) -> None:
        """Remove a table value if there is one (a tombstone on the changelog, as `put`)."""
        if key in table.data:
            del table.data[key]
            self._changelog(table, key, None)

    def _changelog(self, table: Any, key: str, value: bytes | None) -> None:
        event = current_event()
        if event is None:
            raise RuntimeError(f"a write to table {table.name} outside an agent step")
        partition = event.message.partition
        known = self._changelogs.get((table.name, partition))
        if known is None:
            topic = table.changelog_topic.get_topic_name()
            persisted = None  # RocksDB recovers from the offset it keeps; memory keeps none
            if not isinstance(table.data, MemoryStore):
                persisted = partial(table.data.set_persisted_offset, TP(topic, partition))
            known = self._changelogs[table.name, partition] = (topic, persisted)
        self.outputs.change(known[0], partition, orjson.dumps(key), value, known[1])

    def encoded(self, value: Any) -> bytes:
        """A table value, refused (`processing_error`) before it could break the changelog."""
        data = orjson.dumps(value)
        if len(data) > self.config.limits.max_value_bytes:
            raise ValueTooLarge(f"a table value of {len(data)} bytes is over the limit")
        return data

    def send_alerts(self, alerts: Iterable[dict[str, Any]], *, reannounce: bool = False) -> None:
        """Publish alert records (at the step's flush); `reannounce`: versions already
        published (after recovery)."""
        metrics, add, topic = self.metrics, self.outputs.add, self.out.alerts
        for alert in alerts:
            add(topic, alert["alert_id"].encode(), orjson.dumps(alert))
            if reannounce:
                metrics.reannounced.inc()
            else:
                metrics.alert(alert)

    def send_dead_letters(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            self.metrics.dead_letter(letter.reason_code)
            source = letter.source
            if source.topic is not None and source.offset is not None:
                where = (source.topic, source.partition, source.offset)
                failed = letter.reason_code == ReasonCode.PROCESSING_ERROR
                self._letters[where] = self._letters.get(where, False) or failed
            self.outputs.add(self.out.dead_letters, letter.dead_letter_id.encode(), letter.encode())

    def dead_letter(self, logical_topic: str, message: Any, rejected: Rejected) -> None:
        letter = DeadLetter.build(
            rejected.raw,
            self.source(logical_topic, message),
            rejected.errors,
            rejected.reason_code,
            datetime.now(UTC),
            key=message.key if isinstance(message.key, bytes) else None,
        )
        self.send_dead_letters([letter])

    @staticmethod
    def source(logical_topic: str, message: Any) -> DeadLetterSource:
        return DeadLetterSource(
            kind="kafka", topic=logical_topic, partition=message.partition, offset=message.offset
        )

    async def unbundled(
        self, logical_topic: str, events: Sequence[Any], decode: Callable[[bytes], list[T]]
    ) -> list[tuple[Any, T]]:
        """The messages of an inbox batch's bundles (streams.engine.messages), each with
        its event, in log order; a corrupt bundle is a `processing_error` dead letter
        naming it, and the batch goes on."""
        messages: list[tuple[Any, T]] = []
        for event in events:
            try:
                bundle = decode(event.value)
            except Exception as exc:
                self.processing_error(logical_topic, event.message, exc)
                continue
            messages.extend((event, message) for message in bundle)
        return messages

    def processing_error(self, logical_topic: str, message: Any, exc: Exception) -> None:
        """Dead-letter `message` with the error (CONTRACT v1.2: nothing dropped).

        Once per record and batch: the messages of an inbox bundle are handled per
        key, so two of them can fail, and the record already has its dead letter
        (every failure is logged).
        """
        log.error(
            "processing_error",
            topic=logical_topic,
            partition=message.partition,
            offset=message.offset,
            error=error_text(exc),
            exc_info=exc,
        )
        if self._letters.get((logical_topic, message.partition, message.offset)):
            return
        detail = ErrorDetail(loc="", msg=error_text(exc), type=type(exc).__name__)
        try:
            self.dead_letter(
                logical_topic,
                message,
                Rejected(raw_value(message), ReasonCode.PROCESSING_ERROR, [detail]),
            )
        except Exception as again:  # the log line above is what is left
            log.error("processing_error_not_dead_lettered", error=error_text(again))

    def diverted(self, logical_topic: str, message: Any, record: Any) -> bool:
        """Whether an input record is not processed here: a mis-keyed one, or a keyed one
        read from another partition than its key's, is a dead letter; a keyless one read
        from another partition than its id's is forwarded there.

        The codec sees only the value, so the key check (CONTRACT v1.2) is here. A
        keyless record is valid, but Kafka's default partitioner spreads keyless records
        over every partition: processed where it was read, it wrote its order's (unit's,
        customer's) state to that partition's changelog too, and after a restart the
        stale copy could win. Forwarded, it is processed on its id's partition like any
        record; the original is acked and otherwise ignored. A keyed record elsewhere is
        never forwarded (`schemas.placement`): a copy is keyed, so workers that disagree
        on the partition count would forward it back and forth for ever.
        """
        key = message.key if isinstance(message.key, bytes) else None
        try:
            check_key(logical_topic, key, record)
            away = misplaced(logical_topic, key, record, message.partition, self.home)
        except RecordRejected as exc:
            rejected = Rejected(raw_value(message), exc.reason_code, exc.errors)
            self.dead_letter(logical_topic, message, rejected)
            return True
        if away is None:
            return False
        self.forward(logical_topic, message, away)
        return True

    def forward(self, logical_topic: str, message: Any, away: Misplaced) -> None:
        """Produce a copy of `message` to its id's partition of the topic it was read from.

        Keyed with the id, with the original value bytes (no headers: the engine reads
        none). Collected like every output (`OutputSender`): sent by the step's flush,
        before the original's offset can be committed, so a crash loses nothing. A crash
        between that flush and the commit forwards it again; what a second copy does, by
        input kind, is in docs/reliability.md ("Forwarded records"). A batch handled again
        record by record after its step raised keeps what the step collected, so a record
        it forwarded already is not forwarded a second time.
        """
        where = (logical_topic, message.partition, message.offset)
        if where in self._forwarded:
            return
        self.outputs.add(message.topic, away.key, raw_value(message), partition=away.home)
        self._forwarded.add(where)
        self._forward_log.forwarded(logical_topic, message.partition, message.offset, away)


def message_key(message: Any) -> str | None:
    key = message.key
    if key is None:
        return None
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def raw_value(message: Any) -> bytes | None:
    return message.value if isinstance(message.value, bytes) else None


def as_rejected(value: Any) -> Rejected:
    """What the input codec handed over when it is not a valid record."""
    if isinstance(value, Rejected):
        return value
    return Rejected(
        None,
        ReasonCode.NOT_OBJECT,
        [ErrorDetail(loc="", msg="value is null", type="null_value")],
    )
