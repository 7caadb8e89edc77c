"""The one way the engine publishes: a step's outputs, straight to aiokafka's producer.

Split from `runtime` because its guarantees (order, flush before commit, no
dropped error) are a contract of their own, tested without faust
(tests/engine/test_engine_outputs.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from streams.engine.errors import error_text
from streams.engine.messages import BUNDLE_MAX_BYTES, encode_bundle

log = structlog.stdlib.get_logger(__name__)

Persisted = Callable[[int], None]
"""Called with the offset of an acknowledged changelog record."""


class TrackedProducer(Protocol):
    """What `OutputSender` needs of the worker's producer (streams.kafka_transport)."""

    async def send_tracked(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None
    ) -> Any: ...

    async def send_batch_tracked(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[asyncio.Future[Any], int]]: ...

    async def key_partitioner(self, topic: str) -> Callable[[bytes | None], int]: ...

    def check_size(self, key: bytes | None, value: bytes | None) -> None: ...

    def refuse_commit(self, reason: str) -> None:
        """Make the next flush before a commit raise, and every later one (nothing is committed)."""

    def refuse_for_good(self, reason: str) -> None:
        """Make every later commit raise, offsets or none: the worker stops."""


class OutputSender:
    """Every message the engine publishes goes through here, straight to aiokafka.

    Alerts, snapshots, dead letters, table changelog records and the internal join
    messages (order, customer and unit inboxes) skip faust's per-message send path
    (`Topic.send`: a `FutureMessage`, serialisers, sensors, a callback per
    message). An agent step collects them (`add`, `change`, `join`) and its
    `flush` appends them to the accumulator of the worker's one `AIOKafkaProducer`
    - the instance faust's own sends use - as whole record batches, one per topic
    partition and step (`_IdempotentProducer.send_batch_tracked`): one delivery
    future per batch, not a future, a `RecordMetadata` and a callback per message.
    Ticks (a timer, no step) are sent at once (`send`).

    Guarantees:
    - Same records as `Topic.send` gave: the same topic names, keys and values
      (the topics' serialisers were "raw": bytes as given), no headers, the
      producer's timestamp, and the producer's partitioner (murmur2 of the key,
      faust's `DefaultPartitioner`) unless a partition is given.
    - Order: per topic partition a step's messages are appended in the order they
      were collected, and steps take turns under the worker's lock
      (`EngineRuntime.turn`) and flush before they return, so messages of one
      partition are appended - and, with the idempotent producer, written - in
      the order the engine produced them.
    - Flush before commit: an agent's step flushes before it returns, and
      `take_events` acks the batch's inputs only after that, so an input's outputs
      are in the accumulator before its offset can be committed. faust's commit
      (`Consumer._commit_offsets`) awaits `app.producer.flush()` before committing
      the acked offsets; `_IdempotentProducer.flush` waits until aiokafka's
      accumulator is empty *and* every tracked batch is acknowledged by Kafka
      (acks=all).
    - Errors are not dropped: a message the producer would refuse as too large
      raises where it is collected (`add`), inside the step, so the batch is
      handled again record by record and the record whose output it was is
      dead-lettered `processing_error`, as with an awaited `Topic.send`. A flush
      that cannot append (no metadata in time, the producer stopped) raises into
      the step and keeps what it could not append for the retry's flush, per
      topic partition: a partition whose batch was appended is not sent again
      (the state it came from is already stored; a message sent twice is
      harmless to the engine - alerts, snapshots and join messages are
      versioned, dead letters have ids - but a forwarded input's second copy is
      a second row in ClickHouse: docs/reliability.md "Forwarded records").
      A message that Kafka refuses or never acknowledges makes the next flush
      before a commit raise `ProducerFlushError`, so the offsets are not
      committed, the worker stops and its inputs are processed again on restart;
      one refused makes every later commit raise too, a stop's included (a
      signal's stop then exits 1, not 0).
      A tick (`send`) is no step's output and no offset waits for it: one that
      Kafka refuses or never acknowledges (after the producer's own retries, while
      the broker is away included) stops the worker at the next tick of the commit
      timer, offsets or none (`refuse_for_good`); its deadlines are in the table,
      so the restarted worker fires them.

    Internal join messages are bundled (`join`): the messages a step collects for
    the same inbox topic and partition are sent as one Kafka message
    (`messages.encode_bundle`, in send order, split at `BUNDLE_MAX_BYTES`) to the
    partition the receiver's key maps to (murmur2, as the partitioner would have
    chosen for each message alone). Per key the order stays: one key's messages
    all go to one partition, a partition's bundles are sent in the order they
    were filled, and steps take turns under the lock.

    Table changelog records are collected the same way (`change`): a table value
    is written to the store at once (`EngineRuntime.put`) and its changelog
    record is sent by the step's `flush`, only the last value per key of the step
    (the changelog is compacted: recovery keeps the last value per key, and a
    value written over in the same step was never committed alone). Same records
    as faust's path (`Table.on_key_set`): the key as a JSON string (the tables'
    key serializer: faust's json codec is orjson), the value bytes as they are,
    the current event's partition, `None` for a deletion. A changelog record
    that cannot be appended never raises into the step (its state is already
    stored; dead-lettering its inputs would not undo that): it makes the next
    flush before a commit raise, and every later one (`refuse_commit`), so the
    offsets are not committed, the worker stops and its inputs are processed again.
    """

    def __init__(self, producer: Callable[[], TrackedProducer]) -> None:
        self._producer = producer
        """Gives the producer at send time: faust starts it before any agent or timer."""
        self._outputs: dict[str, list[tuple[bytes | None, bytes | None, int | None]]] = {}
        """topic -> (key, value, partition or None: by key) collected, in order, not yet sent."""
        self._joins: dict[tuple[str, int], _Bundles] = {}
        """(inbox topic, partition) -> the join messages collected for it, not yet sent."""
        self._changes: dict[tuple[str, int, bytes], tuple[bytes | None, Persisted | None]] = {}
        """(changelog topic, partition, key) -> the key's last value of the step, not yet sent."""

    def add(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        """Collect one output for the step's `flush`; raises at once if it is too large."""
        self._producer().check_size(key, value)
        records = self._outputs.get(topic)
        if records is None:
            self._outputs[topic] = [(key, value, partition)]
        else:
            records.append((key, value, partition))

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> Any:
        """Append one message at once, outside any step (ticks); returns its delivery future.

        No commit waits for it, so one not delivered stops the worker (`refuse_for_good`):
        the partition it was for would otherwise never tick again (a tick in flight is
        not sent twice), and its deadlines never fire while the worker says it is ready.
        """
        producer = self._producer()
        delivery = await producer.send_tracked(topic, key, value, partition)
        delivery.add_done_callback(_stop_unless_delivered(producer, topic, partition))
        return delivery

    def change(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        persisted: Persisted | None = None,
    ) -> None:
        """Collect a changelog record (sent by `flush`); `persisted` is called with its
        offset once Kafka acknowledged it (RocksDB keeps it to recover from there)."""
        self._changes[topic, partition, key] = (value, persisted)

    def join(self, topic: str, partition: int, message: bytes) -> None:
        """Collect an encoded join message for `topic`'s `partition` (sent by `flush`)."""
        bundles = self._joins.get((topic, partition))
        if bundles is None:
            bundles = self._joins[topic, partition] = _Bundles()
        bundles.add(message)

    @property
    def pending(self) -> int:
        """Messages collected and not yet sent."""
        return (
            sum(len(records) for records in self._outputs.values())
            + sum(b.count for b in self._joins.values())
            + len(self._changes)
        )

    async def flush(self) -> None:
        """Send what was collected: the outputs, the changelog records, then every
        bundle, each topic partition's in order.

        Outputs and bundles leave the collection only once the producer took them,
        so a flush that raises leaves them for the next one: nothing the step's
        stored state depends on is dropped by a retry of the step. They leave it
        per topic partition: a partition whose batch was appended before another
        one's raised is not sent again by the retry (a second copy of a forwarded
        input was a second row in ClickHouse). Within a partition, a batch split
        at the producer's batch size whose later part raises is sent whole again.
        """
        producer = self._producer()
        outputs = self._outputs
        while outputs:
            topic, records = next(iter(outputs.items()))
            by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
            partitions: list[int] = []  # each record's, in order: what is left on a failure
            partition_of: Callable[[bytes | None], int] | None = None
            for key, value, partition in records:
                if partition is None:
                    if partition_of is None:
                        partition_of = await producer.key_partitioner(topic)
                    partition = partition_of(key)
                partitions.append(partition)
                group = by_partition.get(partition)
                if group is None:
                    by_partition[partition] = [(key, value)]
                else:
                    group.append((key, value))
            sent: set[int] = set()
            try:
                for partition, group in by_partition.items():
                    await producer.send_batch_tracked(topic, partition, group)
                    sent.add(partition)
            finally:
                if len(sent) < len(by_partition):  # raised: keep the partitions not appended
                    left = zip(records, partitions, strict=False)  # (and any record added since)
                    kept = [record for record, partition in left if partition not in sent]
                    outputs[topic] = kept + records[len(partitions) :]
            del outputs[topic]
        await self._send_changes(producer)
        joins = self._joins
        while joins:
            (topic, partition), bundles = next(iter(joins.items()))
            bundles.close()
            await producer.send_batch_tracked(
                topic, partition, [(None, bundle) for _, bundle in bundles.closed]
            )
            del joins[topic, partition]

    async def _send_changes(self, producer: TrackedProducer) -> None:
        changes = self._changes
        if not changes:
            return
        groups: dict[tuple[str, int], list[tuple[bytes, bytes | None, Persisted | None]]] = {}
        for (topic, partition, key), (value, persisted) in changes.items():
            groups.setdefault((topic, partition), []).append((key, value, persisted))
        changes.clear()
        for (topic, partition), records in groups.items():
            try:
                batches = await producer.send_batch_tracked(
                    topic, partition, [(key, value) for key, value, _ in records]
                )
            except Exception as exc:
                count, error = len(records), error_text(exc)
                reason = f"{count} changelog record(s) for {topic}[{partition}] not sent: {error}"
                log.error("changelog_record_not_sent", topic=topic, records=count, error=error)
                self.refuse_commit(reason)
                continue
            # One table partition per group, so one `persisted`: its store keeps the
            # offset of each batch's last record once Kafka acknowledged it.
            persisted = records[-1][2]
            if persisted is not None:
                for delivery, count in batches:
                    delivery.add_done_callback(_offset_to(persisted, count - 1))

    def refuse_commit(self, reason: str) -> None:
        """Make the next flush before a commit raise (see `TrackedProducer`)."""
        self._producer().refuse_commit(reason)

    def discard(self) -> int:
        """Drop the outputs and join messages collected (the sends failed, the records
        were dead-lettered and the commit is refused: `EngineRuntime._flush_left`);
        changelog records are never dropped (see `change`)."""
        dropped = sum(len(r) for r in self._outputs.values())
        dropped += sum(b.count for b in self._joins.values())
        self._outputs.clear()
        self._joins.clear()
        return dropped


def _stop_unless_delivered(
    producer: TrackedProducer, topic: str, partition: int | None
) -> Callable[[asyncio.Future[Any]], None]:
    """Stop the worker (`refuse_for_good`) if a message sent outside any step fails."""

    def done(delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled():
            error = "cancelled"
        elif (exc := delivery.exception()) is not None:
            error = error_text(exc)
        else:
            return
        log.error("tick_not_delivered", topic=topic, partition=partition, error=error)
        producer.refuse_for_good(
            f"a clock tick for {topic}[{partition}] was not delivered ({error}): its deadlines"
            " would not fire; a restarted worker fires them"
        )

    return done


def _offset_to(persisted: Persisted, index: int) -> Callable[[asyncio.Future[Any]], None]:
    """Call `persisted` with the offset of a batch's record `index` once Kafka acknowledged it."""

    def done(delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            persisted(delivery.result().offset + index)

    return done


class _Bundles:
    """The bundles of one inbox partition being filled during a step: closed ones, then one open."""

    __slots__ = ("closed", "count", "open", "size")

    def __init__(self) -> None:
        self.closed: deque[tuple[int, bytes]] = deque()
        """(messages, bundle) ready to send, in order."""
        self.open: list[bytes] = []
        self.size = 0
        self.count = 0

    def add(self, message: bytes) -> None:
        if self.open and self.size + len(message) + 1 > BUNDLE_MAX_BYTES:
            self.close()
        self.open.append(message)
        self.size += len(message) + 1
        self.count += 1

    def close(self) -> None:
        if self.open:
            self.closed.append((len(self.open), encode_bundle(self.open)))
            self.open, self.size = [], 0
