"""Each fetched record handed to the streams without four asyncio tasks per record.

faust's fetch loop (`Consumer._drain_messages`) hands every record to the conductor
as `await self.wait_first(callback(message), self.suspend_flow.wait())`, so that a
rebalance (`stop_flow` sets `suspend_flow`) can abandon a delivery that is blocked
on a full stream buffer or on stopped flow control. mode's `Service.wait_first`
wraps each argument, and the service's stopped and crashed events, in a task of its
own and waits on all of them: four tasks created and cancelled per record. py-spy
put it at 14 % of a faust agent that does nothing with its records, the largest
single cost of faust's consume path (docs/performance-engine-history.md, "Four tasks per record").

Almost every delivery never blocks: the conductor decodes the record and puts it
into a buffer that has room. So `EagerDelivery.wait_first` runs the delivery's
first step at once, in a copy of the context as a task would (Python 3.12's
eager tasks do the same). A delivery that finishes in that step is done, exactly
as a task that finished in its first step, and the loop turns once before the
next record, as it did while the fetch loop waited for that task. One that
suspends goes on to mode's `wait_first` from where it stopped, racing
`suspend_flow` as before. While the flow is suspended, or the service stopping
or crashed, everything goes mode's way unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mode.services import WaitResults
from mode.utils.locks import Event as ModeEvent

__all__ = ["Done", "EagerDelivery", "deliver_in_bulk", "step_eagerly"]

T = TypeVar("T")


@dataclass(slots=True)
class Done(Generic[T]):
    """A coroutine that finished in its first step, and what it returned."""

    value: T


def step_eagerly(coro: Coroutine[Any, Any, T]) -> Done[T] | Coroutine[Any, Any, T]:
    """Run `coro` up to its first suspension, in a copy of the current context.

    Returns `Done` when it finished there, or a coroutine that continues it from
    where it suspended (await it or make it a task; closing it closes `coro`).
    An exception raised in the first step propagates.
    """
    context = contextvars.copy_context()
    try:
        pending = context.run(coro.send, None)
    except StopIteration as stop:
        return Done(stop.value)
    return _resume(_Started(coro, pending, context))


async def _resume(started: _Started[T]) -> T:
    return await started


class _Started(Generic[T]):
    """A started coroutine, awaitable from its first suspension (PEP 380 delegation).

    Every later step runs in the context of the first, as all steps of a task do.
    """

    __slots__ = ("context", "coro", "pending")

    def __init__(
        self, coro: Coroutine[Any, Any, T], pending: Any, context: contextvars.Context
    ) -> None:
        self.coro, self.pending, self.context = coro, pending, context

    def __await__(self) -> Generator[Any, Any, T]:
        coro, context, yielded = self.coro, self.context, self.pending
        self.pending = None
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in (a cancellation): hand it on
                try:
                    yielded = context.run(coro.throw, exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                continue
            try:
                yielded = context.run(coro.send, sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


class EagerDelivery:
    """`wait_first` for faust's `Consumer`: the fetch loop's delivery started at once.

    Mixed in before faust's consumer class (its `suspend_flow`, mode's `_stopped`
    and `_crashed` events and `wait_first` are the host's).
    """

    suspend_flow: asyncio.Event
    _stopped: ModeEvent
    _crashed: ModeEvent

    turn_per_record: bool = True
    """Let the loop turn once after each delivered record, as awaiting its task did.

    faust's stream iterator takes one record from its channel per turn, so a
    fetch loop that delivered a whole fetch in one turn would fill the channels
    faster than they drain. A worker whose streams all take what waits in bulk
    (`streams.engine.batching.take_growing`) turns this off: the fetch loop then
    delivers until a channel is full (and waits there, as ever) or the fetch ends.
    """

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109 (mode's signature)
        first = coros[0] if coros else None
        if (
            asyncio.iscoroutine(first)
            and timeout is None
            and not self.suspend_flow.is_set()
            and not self._stopped.is_set()
            and not self._crashed.is_set()
        ):
            try:
                step = step_eagerly(first)
            except BaseException:
                _close(coros[1:])
                raise
            if isinstance(step, Done):
                _close(coros[1:])
                # One turn of the loop, as awaiting the delivery's task gave: faust's
                # streams move one record from their buffer per turn (its
                # `StreamIterator` sleeps 0 per event). Without it the fetch loop
                # handed over 100 records per turn and starved them: the engine's
                # batches shrank to ~50 records and it ran ~17 % slower.
                if self.turn_per_record:
                    await asyncio.sleep(0)
                return WaitResults([first], [step.value], False)
            coros = (step, *coros[1:])
        result: WaitResults = await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc]
        return result


def deliver_in_bulk(app: Any) -> None:
    """Let the fetch loop of `app`'s consumer hand records on without a loop turn each
    (`EagerDelivery.turn_per_record`): for a worker whose streams all take in bulk.
    An app that has built no consumer (a test context) is left as it is."""
    consumer = getattr(app, "_consumer", None)
    if isinstance(consumer, EagerDelivery):
        consumer.turn_per_record = False


def _close(others: tuple[Any, ...]) -> None:
    """Close the coroutines a finished delivery leaves unawaited (`suspend_flow.wait()`)."""
    for other in others:
        if asyncio.iscoroutine(other):
            other.close()
