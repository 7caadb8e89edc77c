"""faust's aiokafka transport, reading only committed records.

The ingest gateway publishes each request as one Kafka transaction and aborts
it when Kafka fails mid-request, so records of a request answered `503` sit in
the log as aborted. faust reads `read_uncommitted` unless it runs exactly-once
(which we avoid: faust #323, #517); this transport makes the worker's consumer
read `read_committed`, so aborted records never reach the engine. Its producer
is idempotent with acks=all, like every other producer of the project.

Its producer also makes faust's commit durable. A table write goes to the
changelog through faust's producer buffer (`send_soon`), and faust flushes the
producer before it commits the input offsets - but faust's buffer flush gives
up after 0.1 s without a send, and does not wait for the message its sender has
just taken out of the buffer. A worker killed after such a commit loses table
writes whose inputs are committed: the restarted worker recovers an older value
and never sees the input again. Here `flush` returns only when every message
handed to the buffer before it has been acknowledged by Kafka, or raises
`ProducerFlushError` (the commit does not happen; the worker stops with that
error and its inputs are processed again).

Its consumer reads again, after every rebalance, what it had fetched but not
handled - also on a partition nobody has committed yet, which aiokafka's seek to
the committed offsets leaves where it was (`seek_to_committed_or_reset`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, FutureMessage

__all__ = [
    "FLUSH_TIMEOUT_S",
    "ChainwatchApp",
    "ProducerFlushError",
    "ReadCommittedTransport",
    "seek_to_committed_or_reset",
]

#: How long a flush before a commit may wait for Kafka to acknowledge the
#: buffered messages (the producer's own request timeout is 20 s by default;
#: this leaves room for retries of a leader change).
FLUSH_TIMEOUT_S = 60.0


class ProducerFlushError(RuntimeError):
    """Buffered messages were not acknowledged in time; offsets must not be committed."""


async def seek_to_committed_or_reset(consumer: AIOKafkaConsumer) -> dict[Any, int | None]:
    """Seek every assigned partition to its committed offset, and one without a commit
    to where the group's reset policy starts it (earliest for the engine).

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
    uncommitted = [tp for tp, offset in committed.items() if offset is None or offset <= 0]
    if uncommitted:
        strategy = consumer._fetcher._default_reset_strategy
        if strategy == OffsetResetStrategy.EARLIEST:
            await consumer.seek_to_beginning(*uncommitted)
        elif strategy == OffsetResetStrategy.LATEST:
            await consumer.seek_to_end(*uncommitted)
    return committed


class _ReadCommittedThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by aiokafka at start()
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """`seek_to_committed_or_reset` on the consumer's thread (an offset may be
        None: no commit, which faust's `perform_seek` expects as aiokafka returns it)."""
        consumer = self._ensure_consumer()
        result: Mapping[TP, int] = await self.call_thread(seek_to_committed_or_reset, consumer)
        return result


class _ReadCommittedConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109 (faust's signature)
        records = await super()._getmany(active_partitions, timeout)
        observe = getattr(self.app, "fetch_observer", None)
        if records and observe is not None:  # once per fetch, not per record
            observe(sum(len(batch) for batch in records.values()))
        return records

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
        self._unacknowledged: set[FutureMessage] = set()
        self._failed: list[str] = []

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}

    def send_soon(self, fut: FutureMessage) -> None:
        self._unacknowledged.add(fut)
        fut.add_done_callback(self._settle)
        super().send_soon(fut)

    def _settle(self, fut: asyncio.Future[Any]) -> None:
        self._unacknowledged.discard(fut)
        if fut.cancelled():
            self._failed.append("cancelled")
        elif (exc := fut.exception()) is not None:
            self._failed.append(f"{type(exc).__name__}: {exc}")

    async def flush(self) -> None:
        """Return once every message buffered before the call is acknowledged by Kafka.

        Raises `ProducerFlushError` if one is still unacknowledged after
        `flush_timeout_s`, or if one failed since the last flush: either way the
        offsets that follow must not be committed.
        """
        await super().flush()
        waiting = [fut for fut in self._unacknowledged if not fut.done()]
        if waiting:
            _done, late = await asyncio.wait(waiting, timeout=self.flush_timeout_s)
            if late:
                raise ProducerFlushError(
                    f"{len(late)} buffered message(s) (table changelog writes) not acknowledged"
                    f" by Kafka within {self.flush_timeout_s:.0f} s; not committing offsets"
                )
        if self._failed:
            failed, self._failed = self._failed, []
            raise ProducerFlushError(
                f"{len(failed)} buffered message(s) (table changelog writes) failed, first:"
                f" {failed[0]}; not committing offsets"
            )


class ReadCommittedTransport(driver.Transport):
    Consumer = _ReadCommittedConsumer
    Producer = _IdempotentProducer


class ChainwatchApp(faust.App):
    """A faust App whose worker consumer reads committed records only."""

    fetch_observer: Callable[[int], None] | None = None
    """Called with the number of records of each non-empty fetch (the worker's metrics)."""

    def _new_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_consumer, self, loop=self.loop)
