"""Batches that grow while a backlog lasts (`streams.engine.batching`).

The sizes policy gets plain unit tests; `take_growing` runs in a real faust
agent through `agent.test_context()` (no broker), as the engine's agents run it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import run_agents
from faust.types.tuples import ConsumerMessage

from chainwatch.runners import largest_batch
from chainwatch.settings import Settings
from streams.app import create_app
from streams.engine.batching import BatchSizes, take_growing


def test_a_full_batch_doubles_the_next_up_to_the_most() -> None:
    sizes = BatchSizes(first=2000, most=32_000, within_s=0.2)
    limits = [2000]
    for _ in range(6):
        limits.append(sizes.after(limits[-1], taken=limits[-1]))
    assert limits == [2000, 4000, 8000, 16_000, 32_000, 32_000, 32_000]


def test_a_batch_that_did_not_fill_halves_the_next_down_to_the_first() -> None:
    sizes = BatchSizes(first=2000, most=32_000, within_s=0.2)
    assert sizes.after(32_000, taken=31_999) == 16_000
    assert sizes.after(4000, taken=1) == 2000
    assert sizes.after(2000, taken=5) == 2000


def test_a_larger_batch_may_wait_longer_in_proportion() -> None:
    sizes = BatchSizes(first=2000, most=32_000, within_s=0.2)
    assert sizes.wait_s(2000) == pytest.approx(0.2)
    assert sizes.wait_s(32_000) == pytest.approx(3.2)


def test_fixed_sizes_do_not_grow() -> None:
    assert not BatchSizes(first=2000, most=2000, within_s=0.2).grows
    assert BatchSizes(first=2000, most=4000, within_s=0.2).grows


def test_a_backlog_is_taken_in_growing_batches_and_every_record_once(tmp_path: Path) -> None:
    """2 + 4 + 8 + 8 queued records come as four full batches (the last at the most);
    3 more make a partial batch, taken once no more come (long before its whole
    wait of 10 s), which halves the next limit to 4."""
    app = create_app("batching-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    sizes = BatchSizes(first=2, most=8, within_s=2.5)
    batches: list[list[int]] = []
    acked: list[int] = []
    taken: list[Any] = []
    arrived = asyncio.Condition()
    partial_took: list[float] = []

    @app.agent()
    async def numbers(stream: Any) -> AsyncIterator[None]:
        async for events in take_growing(stream, sizes):
            batches.append([event.value for event in events])
            acked.append(sum(1 for event in events if event.message.acked))
            taken.extend(events)
            async with arrived:
                arrived.notify_all()
            yield None

    async def until(count: int) -> None:
        async with arrived:
            await asyncio.wait_for(
                arrived.wait_for(lambda: sum(len(b) for b in batches) >= count), timeout=30
            )

    async def run() -> None:
        async with numbers.test_context() as agent:
            for value in range(22):
                await agent.put(value, wait=False)
            await until(22)
            started = time.monotonic()
            for value in range(22, 25):
                await agent.put(value, wait=False)
            await until(25)
            partial_took.append(time.monotonic() - started)
            for value in range(25, 29):
                await agent.put(value, wait=False)
            await until(29)

    run_agents(app, run())
    assert [len(b) for b in batches] == [2, 4, 8, 8, 3, 4]
    assert sizes.wait_s(8) == 10
    assert partial_took[0] < 5
    assert [v for b in batches for v in b] == list(range(29))
    assert acked == [0] * len(batches)  # a batch is acked only after its step ...
    assert all(event.message.acked for event in taken[:-4])  # ... when the next is asked for


def test_only_event_clock_workers_let_their_batches_grow() -> None:
    live = Settings(engine={"clock": "live"})  # type: ignore[arg-type]
    replay = Settings(engine={"clock": "event"})  # type: ignore[arg-type]
    assert largest_batch(live) == live.engine.batch_size == 2000
    assert largest_batch(replay) == replay.engine.replay_batch_size == 32_000


def test_a_batch_is_taken_at_once_when_nothing_is_left_to_read(tmp_path: Path) -> None:
    """The end of a replay's window: each hop of its join messages (an answer, the
    order's occupancy, the unit's answer) waited a quiet slice for records that
    were not coming. Here a slice is 10 s; the records come long before."""
    app = create_app("drained-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    sizes = BatchSizes(first=2, most=8, within_s=40.0)
    batches: list[list[int]] = []
    arrived = asyncio.Condition()
    waited: list[float] = []

    numbers = _batches_of_values(app, sizes, batches, arrived)

    async def run() -> None:
        async with numbers.test_context() as agent:
            for value in (1, 2, 3):
                started = time.monotonic()
                await agent.put(value, wait=False)
                async with arrived:
                    await asyncio.wait_for(arrived.wait_for(lambda n=value: len(batches) == n), 30)
                waited.append(time.monotonic() - started)

    run_agents(app, run())
    assert batches == [[1], [2], [3]]
    assert max(waited) < sizes.quiet_s / 2


def test_records_fetched_before_a_rebalance_are_skipped_and_the_rest_tracked_until_acked(
    tmp_path: Path,
) -> None:
    """What faust's stream iterator did per record, `take_growing` does for its bulk:
    a record of an older consumer generation (fetched before a rebalance) is not
    taken, and every record taken is tracked as unacked (the consumer commits no
    offset past it) until its batch is acked, after its step."""
    app = create_app("generation-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    app.sensors.add(app.monitor)  # as a started worker has it
    sizes = BatchSizes(first=2, most=8, within_s=0.4)
    batches: list[list[int]] = []
    unacked_in_step: list[bool] = []
    arrived = asyncio.Condition()

    @app.agent()
    async def numbers(stream: Any) -> AsyncIterator[None]:
        async for events in take_growing(stream, sizes, drained=lambda: True):
            batches.append([event.value for event in events])
            unacked = app.consumer._unacked_messages
            unacked_in_step.append(all(event.message in unacked for event in events))
            async with arrived:
                arrived.notify_all()
            yield None

    async def run() -> None:
        async with numbers.test_context() as agent:
            channel = agent.stream().channel

            async def fetched(value: int) -> Any:
                """A record as the consumer hands it to the stream (tracked by offset)."""
                sent = agent.to_message(None, value, offset=value)
                message = ConsumerMessage(
                    sent.topic, 0, value, time.time(), 0, None, None, sent.value, None,
                    generation_id=app.consumer_generation_id,
                )  # fmt: skip
                app.topics._acking_topics.add(message.topic)
                channel.queue.put_nowait(await channel.decode(message))
                return message

            async def batch(count: int) -> None:
                async with arrived:
                    await asyncio.wait_for(arrived.wait_for(lambda: len(batches) == count), 30)

            taken = [await fetched(0)]
            await batch(1)
            # faust's livelock check reads when a partition's records last entered a stream
            assert app.monitor.stream_inbound_time.get(taken[0].tp) is not None
            stale = [await fetched(1), await fetched(2)]
            app.consumer_generation_id += 1  # the group rebalanced before they were taken
            taken.append(await fetched(3))
            await batch(2)
            taken.append(await fetched(4))  # asks for the next batch: the last one is acked
            await batch(3)
            assert [m.acked for m in taken[:2]] == [True, True]
            assert not any(m in app.consumer._unacked_messages for m in taken[:2])
            assert not any(m.tracked or m.acked for m in stale)

    run_agents(app, run())
    assert batches == [[0], [3], [4]]
    assert unacked_in_step == [True, True, True]


def test_a_stream_that_stops_ends_its_batches_without_a_crash(tmp_path: Path) -> None:
    """faust ends a stream's channel by throwing `StopAsyncIteration` into it when the
    worker stops: the batches end there, as faust's own iterator does, instead of
    crashing the stream (which made a stopped worker exit with status 1)."""
    app = create_app("stop-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    sizes = BatchSizes(first=2, most=8, within_s=0.4)
    batches: list[list[int]] = []
    arrived = asyncio.Condition()

    numbers = _batches_of_values(app, sizes, batches, arrived)

    async def run() -> None:
        async with numbers.test_context() as agent:
            stream = agent.stream()
            await agent.put(1, wait=False)
            async with arrived:
                await asyncio.wait_for(arrived.wait_for(lambda: len(batches) == 1), 30)
            draining = list(stream._futures)
            assert draining
            await stream.channel.throw(StopAsyncIteration())
            await asyncio.wait_for(asyncio.gather(*draining), 30)
            assert not stream._crashed.is_set()
            assert stream._crash_reason is None

    run_agents(app, run())
    assert batches == [[1]]


def _batches_of_values(
    app: Any, sizes: BatchSizes, batches: list[list[int]], arrived: asyncio.Condition
) -> Any:
    """An agent that takes growing batches with nothing left to read (each taken at
    once), appends each batch's values to `batches` and notifies `arrived`."""

    @app.agent()
    async def numbers(stream: Any) -> AsyncIterator[None]:
        async for events in take_growing(stream, sizes, drained=lambda: True):
            batches.append([event.value for event in events])
            async with arrived:
                arrived.notify_all()
            yield None

    return numbers
