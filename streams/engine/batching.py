"""Batches that grow while a backlog lasts: how a replay worker takes its records.

An order is derived once per batch whatever number of its records the batch
holds, so the larger a batch the fewer derivations per record: on a replay's
backlog the pure order path runs ~2x faster in batches of 15,000 than of 2,000
(docs/performance-engine.md, "Batches that grow"). A live worker cannot wait for
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


def _current_event(stream: Any) -> Any:
    event = stream.current_event
    if event is None:
        raise RuntimeError("Take buffer found current_event is None")
    return event


async def take_growing(
    stream: Any,
    sizes: BatchSizes,
    after_ack: Callable[[], Awaitable[None]] = _nothing,
    drained: Callable[[], bool] = _never,
) -> AsyncIterator[list[Any]]:
    """`faust.Stream.take_events` with a limit and a wait chosen per batch (`sizes`).

    Adapted from faust-streaming 0.15's `Stream.take_events` (BSD-3-Clause), whose
    limit and timeout are fixed for the generator's life. As there, every record
    is buffered by a processor of the stream, consumed passively in the
    background; a batch is yielded when full or when its wait ends, and its
    events are acked only when the consumer asks for the next batch, so no
    input's offset is committed before its step has run and flushed.
    `after_ack` is awaited once a batch's events are acked: the first moment
    their offsets may be committed (`EngineRuntime` commits there when a
    replay's window has drained). A batch is also taken as soon as `drained()`
    says nothing is left to read for it (none of its stream's records waits in
    Kafka or in the stream's queue): the hops of join messages at the end of a
    replay's window (answers, occupancy, answers again) then wait no quiet slice
    each. It is asked when a batch's first record comes and once per slice.
    """
    buffer: list[Any] = []
    events: list[Any] = []
    full = asyncio.Event()
    first = asyncio.Event()  # a batch's first record came
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    limit = sizes.first
    enable_acks: bool = stream.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:
                try:
                    await consuming
                finally:
                    consuming = None
            buffer.append(value)
            first.set()
            events.append(_current_event(stream))
            if len(buffer) >= limit:
                full.set()  # strict: a batch never holds more than its limit
                consumed.clear()
                await stream.wait(consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    async def wait_for_batch() -> None:
        """Until the batch is full, its wait is over, or its records stopped coming."""
        loop, waiting = stream.loop, stream.channel.queue
        started = loop.time()
        while not stream.should_stop and not full.is_set():
            if buffer and drained():
                return  # all there is to read: waiting longer only adds a hop's latency
            held, slice_started = len(buffer), loop.time()
            left = sizes.wait_s(limit) - (slice_started - started)
            wake = full if buffer else first
            await stream.wait_for_stopped(wake, timeout=max(0.0, min(sizes.quiet_s, left)))
            now = loop.time()
            if not buffer:
                started = now  # nothing yet: the wait starts with the first record
            elif sizes.taken(limit, now - started, now - slice_started,
                             came=len(buffer) > held or not waiting.empty()):  # fmt: skip
                return

    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await wait_for_batch()
            if not buffer:
                continue
            consuming = stream.loop.create_future()
            try:
                yield list(events)
            finally:
                taken = len(buffer)
                buffer.clear()
                first.clear()
                for event in events:
                    await stream.ack(event)
                events.clear()
                limit = sizes.after(limit, taken)
                if not consuming.done():
                    consuming.set_result(None)
                full.clear()
                consumed.set()
            await after_ack()  # not while the generator is being closed
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
