"""Reading back the records before an endpoint's committed position (the warm-up).

An endpoint recognises a repeat (payloads.py) only if it remembers the latest
message of that alert; a fresh process remembers nothing, and the engine
re-announces every alert after its own restart, so a rolling restart re-paged
every alert. So before an endpoint delivers anything of a partition it was
assigned, it reads that partition from `max(beginning, committed - records)` up
to the committed position, showing each record to the same memory as the live
path and delivering nothing.

Where it runs: not in aiokafka's `on_partitions_assigned`, which is awaited
inside the rebalance before the member's heartbeat task starts again, so a
long read there would cost the group its member (the session timeout). The
listener only *pauses* the new partitions (synchronously, before any fetch:
their positions are not even known yet) and starts `read_back` as a task on a
separate consumer without a group (`assign` + `seek`, nothing committed), so
the endpoint's own consumer keeps polling and stays in its group. Each
partition is resumed once its read is done.

It first reads the metadata of the partitions' last commits (done.py): the
deliveries finished above the committed position, which the endpoint must not
deliver again; a partition is handed over with them (`restore`) when its
read-back ends, failed or not, and also when the read-back is off
(`records` = 0: the partitions are still paused for that one read). A failed
read of the metadata is logged and leaves nothing to skip.

Failure: the metadata's read has its own deadline (done.py, `READ_TIMEOUT_S`),
so a partition stays paused for at most that plus `timeout_s`; every Kafka call
of the read-back falls under one deadline (`timeout_s`); a read that
fails or runs out of time raises `WarmupFailed` naming the step, and the
caller forgets those partitions (a partial read could hold an older content
as the latest, and skip a real change) and resumes them: deliveries go on,
only a repeat may be delivered again. A revocation, or the endpoint's end,
cancels the read and waits for it at most `CANCEL_WAIT_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.bounded_wait import ended_within
from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks.consumer import new_consumer, stop_consumer
from sinks.webhooks import metrics
from sinks.webhooks.done import Range, read_done
from sinks.webhooks.settings import DEFAULT_WARMUP_RECORDS, DEFAULT_WARMUP_TIMEOUT_S

log = structlog.stdlib.get_logger(__name__)

POLL_MS = 200
BATCH_RECORDS = 2_000
"""Records per fetch; the event loop gets a turn after each batch, so the endpoint's own
consumer (its heartbeats) and the deliveries of every endpoint go on meanwhile."""


STOP_TIMEOUT_S = 10.0
"""Closing the reader (after the read, a failure or a cancellation) waits no longer."""
CANCEL_WAIT_S = STOP_TIMEOUT_S + 2.0
"""How long `Warmup.stop` waits for the read-back it cancelled: its reader's close, and
a margin; a read-back that swallowed the cancel is left behind then, logged."""


class WarmupFailed(RuntimeError):
    """The read-back did not finish: what it was doing and why."""


@dataclass(frozen=True)
class WarmupConfig:
    """The read-back's bounds (`CHAINWATCH_WEBHOOKS__WARMUP_*`)."""

    records: int = DEFAULT_WARMUP_RECORDS
    """Records per partition read back before the committed position; 0: none."""
    timeout_s: float = DEFAULT_WARMUP_TIMEOUT_S
    """For the whole read-back of one assignment, every Kafka call included."""


@dataclass(frozen=True)
class PartitionRead:
    """One partition's read-back, for the log."""

    tp: TopicPartition
    first: int
    end: int
    records: int
    seconds: float


OnRecord = Callable[[TopicPartition, int, bytes | None], None]
OnDone = Callable[[PartitionRead], None]
Positions = Callable[[TopicPartition], Awaitable[int]]


def reader(bootstrap: Kafka, options: Mapping[str, Any]) -> AIOKafkaConsumer:
    """A consumer without a group: it reads what it is told and commits nothing, with the
    settings of the endpoint's own consumer (read_committed; from the earliest offset
    when the start fell below retention meanwhile)."""
    return new_consumer(bootstrap, None, **options)


class _Steps:
    """The step in progress, so a timeout says where it was stuck."""

    def __init__(self) -> None:
        self.now = "starting"


async def read_back(
    tps: Collection[TopicPartition],
    positions: Positions,
    config: WarmupConfig,
    on_record: OnRecord,
    on_done: OnDone,
    *,
    bootstrap: Kafka,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Show every record of `tps` in `[max(beginning, position - records), position)`
    to `on_record`, in offset order per partition; `on_done` after each partition.

    `positions(tp)` is the endpoint consumer's `position` (its committed offset, or
    where its reset policy puts it). Raises `WarmupFailed` past `config.timeout_s`
    or on any error (a Kafka error, a partition revoked meanwhile, a callback's).
    `PartitionRead.seconds` counts from the start of this read-back (the
    partitions are read together).
    """
    step = _Steps()
    try:
        async with deadline(config.timeout_s):
            await _read(tps, positions, config, on_record, on_done, step, bootstrap, options or {})
    except TimeoutError:
        raise WarmupFailed(f"not finished within {config.timeout_s} s ({step.now})") from None
    except Exception as exc:  # Kafka's errors, and a partition revoked under us
        raise WarmupFailed(f"{step.now}: {type(exc).__name__}: {exc}") from exc


async def _read(
    tps: Collection[TopicPartition],
    positions: Positions,
    config: WarmupConfig,
    on_record: OnRecord,
    on_done: OnDone,
    step: _Steps,
    bootstrap: Kafka,
    options: Mapping[str, Any],
) -> None:
    step.now = "reading the committed positions"
    targets = {tp: int(await positions(tp)) for tp in tps}
    began = time.monotonic()
    source = reader(bootstrap, options)
    try:
        step.now = f"connecting to {bootstrap}"
        await source.start()
        source.assign(list(tps))
        step.now = "reading the partitions' first and end offsets"
        firsts = await source.beginning_offsets(list(tps))
        ends = await source.end_offsets(list(tps))
        todo: dict[TopicPartition, tuple[int, int]] = {}
        for tp, target in targets.items():
            end = min(target, ends[tp])  # a committed offset past the end: none after it
            first = max(firsts[tp], end - config.records)
            if first >= end:
                on_done(PartitionRead(tp, first, end, 0, time.monotonic() - began))
                continue
            source.seek(tp, first)
            todo[tp] = (first, end)
        counts = dict.fromkeys(todo, 0)
        while todo:
            step.now = f"fetching records of {_names(todo)}"
            batch = await source.getmany(*todo, timeout_ms=POLL_MS, max_records=BATCH_RECORDS)
            for tp, records in batch.items():
                if tp not in todo:
                    continue
                end = todo[tp][1]
                for record in records:
                    if record.offset >= end:
                        break
                    on_record(tp, record.offset, record.value)
                    counts[tp] += 1
            for tp in list(todo):
                if await source.position(tp) >= todo[tp][1]:
                    first, end = todo.pop(tp)
                    source.pause(tp)
                    on_done(PartitionRead(tp, first, end, counts[tp], time.monotonic() - began))
            await asyncio.sleep(0)  # a buffered batch returns at once: let the loop run
    finally:
        # in the `finally` of a read-back that may be being cancelled (a revocation, its
        # deadline): `stop_consumer` hands on only a cancel made since it began, so
        # aiokafka's own `CancelledError` (a stop with the broker gone) still closes the
        # client, and a stop past the deadline is cut and its client closed
        await stop_consumer(source, within_s=STOP_TIMEOUT_S)


def _names(tps: Collection[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps))


class Warmup:
    """One endpoint's read-backs: the partitions held paused for one, and its task.

    `start` runs inside `on_partitions_assigned` and only pauses and spawns;
    `stop` runs in `on_partitions_revoked` (eager rebalancing revokes every
    partition, so every rebalance warms up every partition again) and when the
    endpoint stops. The endpoint resumes a partition once it has left `warming`.
    """

    def __init__(
        self,
        endpoint: str,
        config: WarmupConfig,
        *,
        bootstrap: Kafka,
        options: Mapping[str, Any],
        remember: OnRecord,
        forget: Callable[[TopicPartition], None],
        restore: Callable[[TopicPartition, list[Range]], None],
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.bootstrap = bootstrap
        self.options = options
        self.remember = remember
        self.forget = forget
        self.restore = restore
        self._done_ranges: dict[TopicPartition, list[Range]] = {}
        self.warming: set[TopicPartition] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, consumer: AIOKafkaConsumer, assigned: Collection[TopicPartition]) -> None:
        """Pause `assigned` and read them back in a task (synchronous: nothing is fetched
        for them before the pause)."""
        if not assigned:
            return
        if self._task is not None:
            self._task.cancel()  # not left behind (`stop` comes first on a rebalance)
        consumer.pause(*assigned)
        self.warming = set(assigned)
        self._task = asyncio.create_task(
            self._run(consumer, sorted(assigned)), name=f"webhook-{self.endpoint}-warmup"
        )

    async def stop(self) -> None:
        """Cancel a read-back in progress; what it read stays (the caller forgets it).

        Waited for at most `CANCEL_WAIT_S`: the endpoint's stop and the rebalance
        listener wait here, and a cancel that third-party code swallowed would hold
        them for ever."""
        task, self._task = self._task, None
        self.warming.clear()
        self._done_ranges = {}
        if task is None:
            return
        if not await ended_within(task, CANCEL_WAIT_S, cancel=True):
            log.warning("webhook_warmup_stop_cut", endpoint=self.endpoint, after_s=CANCEL_WAIT_S)

    async def _run(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """Read back, then hand every partition over. Whatever ends the read other than a
        cancel hands over those left: an error of ours there ended the task with its
        partitions paused, and their alerts were never delivered, with nothing said."""
        began = time.monotonic()
        try:
            self._done_ranges = await read_done(consumer, tps, self.endpoint)
            if self.config.records <= 0:
                for tp in tps:
                    self._release(tp)
                return
            await read_back(
                tps,
                consumer.position,
                self.config,
                self.remember,
                self._done,
                bootstrap=self.bootstrap,
                options=self.options,
            )
        except WarmupFailed as exc:
            self._give_up(began, str(exc))
        except Exception as exc:  # a bug of ours: logged with its traceback, never paused
            log.error("webhook_warmup_crashed", endpoint=self.endpoint, exc_info=exc)
            self._give_up(began, f"{type(exc).__name__}: {exc}")

    def _give_up(self, began: float, error: str) -> None:
        """Hand over the partitions still warming, forgotten (a partial memory could skip
        a real change); one that fails to be handed over is still resumed."""
        left = sorted(self.warming)
        for tp in left:
            try:
                self.forget(tp)
                self._release(tp)  # what was finished above the position still was
            except Exception as exc:
                log.error(
                    "webhook_warmup_handover_failed", endpoint=self.endpoint,
                    partition=tp.partition, exc_info=exc,
                )  # fmt: skip
                self.warming.discard(tp)
        metrics.WARMUPS.labels(self.endpoint, "failed").inc(len(left))
        log.warning(
            "webhook_warmup_failed",
            endpoint=self.endpoint,
            partitions=[tp.partition for tp in left],
            seconds=round(time.monotonic() - began, 3),
            error=error,
            consequence="these partitions are delivered from their committed position "
            "without the memory of earlier messages: an alert the engine re-published "
            "unchanged may be delivered again (under a new webhook-id)",
        )

    def _release(self, tp: TopicPartition) -> None:
        """Hand the partition over to the endpoint: its done ranges first, then resumed
        (synchronously: none of its records is handed on before its done ranges)."""
        self.restore(tp, self._done_ranges.pop(tp, []))
        self.warming.discard(tp)

    def _done(self, read: PartitionRead) -> None:
        self._release(read.tp)
        metrics.WARMUPS.labels(self.endpoint, "done").inc()
        log.info(
            "webhook_warmup_done",
            endpoint=self.endpoint,
            topic=read.tp.topic,
            partition=read.tp.partition,
            from_offset=read.first,
            to_offset=read.end,
            records=read.records,
            seconds=round(read.seconds, 3),
        )
