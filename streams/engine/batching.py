"""Batches that grow while a backlog lasts: how a replay worker takes its records.

An order is derived once per batch whatever number of its records the batch
holds, so the larger a batch the fewer derivations per record: on a replay's
backlog the pure order path runs ~2x faster in batches of 15,000 than of 2,000
(docs/performance-engine-history.md, "Batches that grow"). A live worker cannot wait for
large batches (each hop adds its wait to the deadline latency), so it takes
faust's `take_events(batch_size, within)` as before. A worker on the event clock
(a replay or backtest: the clock is the records', not the wall's) takes
`take_growing`'s batches instead:

- the first batch is `first` records (a start-up commits as soon as before);
- a batch that filled doubles the next one, up to `most`; one that did not
  (the backlog ran dry, or the wait ended first) halves it, down to `first`;
- a batch of n records waits at most `within_s * n / first` for them, so a
  growing batch may take as long to fill as its records take to arrive;
- but it is taken as soon as no record came for `within_s / 4` while the event
  loop was free to deliver one (a slice that took more than twice as long was
  spent in another agent's step, not waiting) and none waits in the stream's
  channel queue (delivered, not yet moved into the batch): the end of a backlog, such as
  each event-time window of a replay, which is drained before the next is
  published, waits that long per hop, not the whole wait. faust's
  `take_events` always waits its whole `within` for a batch that does not fill.

The results do not depend on the batch sizes: a batch is applied as its records
one by one would be, except that intermediate alert versions and snapshots are
not published (CONTRACT v1.2), which the replay determinism tests compare.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

QUIET_SHARE = 4
"""A growing batch is taken after `within_s / QUIET_SHARE` without a new record."""


@dataclass(frozen=True, slots=True)
class BatchSizes:
    """How large a batch may grow, and how long one may wait for its records."""

    first: int
    """The first batch's size, and the least a batch shrinks to."""
    most: int
    """The largest batch (== `first`: fixed batches, faust's `take_events`)."""
    within_s: float
    """How long a batch of `first` records waits for them."""

    @property
    def grows(self) -> bool:
        return self.most > self.first

    def after(self, limit: int, taken: int) -> int:
        """The next batch's limit after a batch of `taken` records under `limit`."""
        if taken >= limit:
            return min(self.most, limit * 2)
        return max(self.first, limit // 2)

    def wait_s(self, limit: int) -> float:
        return self.within_s * limit / self.first

    def taken(self, limit: int, waited_s: float, slice_s: float, *, came: bool) -> bool:
        """Whether a batch under `limit` is taken after a slice of its wait: the wait
        is over, or no record `came` in the slice (nor waits in the stream's queue)
        while the event loop was free to deliver one (a slice that took more than
        twice as long was spent in another agent's step)."""
        return waited_s >= self.wait_s(limit) or (not came and slice_s < 2 * self.quiet_s)

    @property
    def quiet_s(self) -> float:
        """A batch is taken once no record came for this long (with the loop free)."""
        return self.within_s / QUIET_SHARE


async def _nothing() -> None:
    return None


def _never() -> bool:
    return False


async def take_growing(
    stream: Any,
    sizes: BatchSizes,
    after_ack: Callable[[], Awaitable[None]] = _nothing,
    drained: Callable[[], bool] = _never,
) -> AsyncIterator[list[Any]]:
    """`faust.Stream.take_events` with a limit and a wait chosen per batch (`sizes`).

    Adapted from faust-streaming 0.15's `Stream.take_events` (BSD-3-Clause), whose
    limit and timeout are fixed for the generator's life. As there, records are
    buffered in the background; a batch is yielded when full or when its wait
    ends, and its events are acked only when the consumer asks for the next
    batch, so no input's offset is committed before its step has run and flushed.

    Unlike there, the records are not buffered by a processor of faust's stream
    iterator, which hands on one record per turn of the event loop, with its
    sensors and context per record: `drain` moves every record waiting in the
    stream's channel at once, doing what the iterator does that the commit
    depends on (a record fetched before a rebalance is skipped; each record is
    tracked as unacked, so no offset past it is committed until it is acked).
    Its fetch loop then hands records over in bulk (`EagerDelivery.turn_per_record`
    off, set by `EngineRuntime` for a worker that takes its batches here): about
    a tenth of a replay worker's time, one loop turn and one iteration per record
    (docs/performance-engine-history.md, "Records moved in bulk").
    `after_ack` is awaited once a batch's events are acked: the first moment
    their offsets may be committed (`EngineRuntime` commits there when a
    replay's window has drained). A batch is also taken as soon as `drained()`
    says nothing is left to read for it (none of its stream's records waits in
    Kafka or in the stream's queue): the hops of join messages at the end of a
    replay's window (answers, occupancy, answers again) then wait no quiet slice
    each. It is asked when a batch's first record comes and once per slice.
    """
    batch = _Batch(stream, sizes.first)
    enable_acks: bool = stream.enable_acks
    stream.enable_acks = False
    draining = stream.add_future(batch.drain())
    try:
        while not stream.should_stop:
            await batch.wait(sizes, drained)
            if not batch.events:
                continue
            batch.consuming = stream.loop.create_future()
            try:
                yield list(batch.events)
            finally:
                await batch.acked(sizes)
            await after_ack()  # not while the generator is being closed
    finally:
        stream.enable_acks = enable_acks
        draining.cancel()


class _Batch:
    """The records of the batch being taken, moved from the stream's channel by `drain`."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.events: list[Any] = []
        self.full = asyncio.Event()
        self.first = asyncio.Event()  # the batch's first record came
        self.consumed = asyncio.Event()
        self.consuming: asyncio.Future[None] | None = None
        """Set while a batch taken is handled: no record moves until it is acked."""

    async def drain(self) -> None:
        """Move records from the stream's channel into the batch, as many as wait."""
        stream = self.stream
        queue, app = stream.channel.queue, stream.app
        acking_topics = app.topics._acking_topics
        unacked = app.consumer._unacked_messages
        on_message_in, on_event_in = stream._on_message_in, stream._on_stream_event_in
        try:
            while not stream.should_stop:
                event = queue.get_nowait() if not queue.empty() else await queue.get()
                consuming = self.consuming
                if consuming is not None:  # the batch taken last is not acked yet
                    try:
                        await consuming
                    finally:
                        if self.consuming is consuming:
                            self.consuming = None
                message = event.message
                if (
                    not app.flow_control.is_active()
                    or message.generation_id != app.consumer_generation_id
                ):
                    continue  # fetched before a rebalance: skipped, as faust's streams do
                if message.topic in acking_topics and not message.tracked:
                    message.tracked = True  # as faust's stream iterator: the consumer
                    unacked.add(message)  # commits no offset past an unacked record
                    on_message_in(message.tp, message.offset, message)
                # the sensors' per-event hook, as there: faust's livelock check reads the
                # monitor's time of a partition's last record in a stream from it
                on_event_in(message.tp, message.offset, stream, event)
                self.events.append(event)
                self.first.set()
                if len(self.events) >= self.limit:
                    self.full.set()  # strict: a batch never holds more than its limit
                    self.consumed.clear()
                    await stream.wait(self.consumed)
        except StopAsyncIteration:
            return  # the channel ended (faust throws this into it when a stream stops)
        except Exception as exc:  # (a cancellation is not one: it goes on up)
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)

    async def wait(self, sizes: BatchSizes, drained: Callable[[], bool]) -> None:
        """Until the batch is full, its wait is over, or its records stopped coming."""
        stream, events = self.stream, self.events
        loop, waiting = stream.loop, stream.channel.queue
        started = loop.time()
        while not stream.should_stop and not self.full.is_set():
            if events and drained():
                return  # all there is to read: waiting longer only adds a hop's latency
            held, slice_started = len(events), loop.time()
            left = sizes.wait_s(self.limit) - (slice_started - started)
            wake = self.full if events else self.first
            await stream.wait_for_stopped(wake, timeout=max(0.0, min(sizes.quiet_s, left)))
            now = loop.time()
            if not events:
                started = now  # nothing yet: the wait starts with the first record
            elif sizes.taken(self.limit, now - started, now - slice_started,
                             came=len(events) > held or not waiting.empty()):  # fmt: skip
                return

    async def acked(self, sizes: BatchSizes) -> None:
        """Ack the batch handed on (its step ran) and let the next one fill."""
        taken = len(self.events)
        self.first.clear()
        for event in self.events:
            await self.stream.ack(event)
        self.events.clear()
        self.limit = sizes.after(self.limit, taken)
        if self.consuming is not None and not self.consuming.done():
            self.consuming.set_result(None)
        self.full.clear()
        self.consumed.set()
