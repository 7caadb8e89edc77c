"""The admission of requests in flight (streams/ingest/admission.py), without HTTP."""

from __future__ import annotations

import asyncio

import pytest

from streams.ingest.admission import (
    RETRY_AFTER_JITTER_PERCENT,
    Admission,
    jittered_retry_after,
    retry_after_bounds,
)


async def _settled() -> None:
    """Let every task that is ready run (a few turns of the loop, no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_requests_beyond_the_limit_are_admitted_in_arrival_order_as_slots_free() -> None:
    async def run() -> list[int]:
        admission = Admission(limit=2, wait_s=30)
        assert await admission.enter()
        assert await admission.enter()
        order: list[int] = []

        async def waiter(n: int) -> None:
            assert await admission.enter()
            order.append(n)

        tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
        await _settled()
        assert (admission.waiting, order) == (3, [])
        for _ in range(3):
            admission.leave()
            await _settled()
        await asyncio.gather(*tasks)
        assert (admission.admitted, admission.waiting) == (2, 0)
        return order

    assert asyncio.run(run()) == [0, 1, 2]


def test_a_newcomer_does_not_pass_a_request_that_waits() -> None:
    async def run() -> None:
        admission = Admission(limit=1, wait_s=30)
        assert await admission.enter()
        first = asyncio.create_task(admission.enter())
        await _settled()
        admission.leave()  # the slot goes to `first`, not to whoever asks next
        newcomer = asyncio.create_task(admission.enter())
        await _settled()
        assert first.done()
        assert first.result()
        assert not newcomer.done()
        admission.leave()
        assert await newcomer

    asyncio.run(run())


def test_a_request_that_gets_no_slot_within_the_wait_is_refused_and_leaves_the_queue() -> None:
    async def run() -> None:
        admission = Admission(limit=1, wait_s=0.01)
        assert await admission.enter()
        assert not await admission.enter()
        assert (admission.admitted, admission.waiting) == (1, 0)
        admission.leave()
        assert admission.admitted == 0

    asyncio.run(run())


def test_without_a_wait_a_request_beyond_the_limit_is_refused_at_once() -> None:
    async def run() -> None:
        admission = Admission(limit=1, wait_s=0)
        assert await admission.enter()
        assert not await admission.enter()
        assert admission.waiting == 0

    asyncio.run(run())


async def _held_with_two_waiting() -> tuple[Admission, asyncio.Task[bool], asyncio.Task[bool]]:
    """One slot, held; two requests waiting for it in order (the first to be cancelled)."""
    admission = Admission(limit=1, wait_s=30)
    assert await admission.enter()
    cancelled = asyncio.create_task(admission.enter())
    after = asyncio.create_task(admission.enter())
    await _settled()
    return admission, cancelled, after


def test_a_cancelled_waiter_leaves_the_queue_and_the_slot_goes_to_the_next() -> None:
    async def run() -> None:
        admission, cancelled, after = await _held_with_two_waiting()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert admission.waiting == 1
        admission.leave()
        assert await after
        assert (admission.admitted, admission.waiting) == (1, 0)

    asyncio.run(run())


def test_a_slot_handed_to_a_waiter_as_it_is_cancelled_passes_on() -> None:
    """A shutdown's cancel that lands after the slot was handed over must not lose it."""

    async def run() -> None:
        admission, cancelled, after = await _held_with_two_waiting()
        admission.leave()  # `cancelled` is handed the slot but has not run yet
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await after
        admission.leave()
        assert (admission.admitted, admission.waiting) == (0, 0)

    asyncio.run(run())


@pytest.mark.parametrize("base", [1, 2, 5, 7, 60, 3600])
def test_the_retry_after_varies_around_its_setting_within_bounds(base: int) -> None:
    seen = {jittered_retry_after(base) for _ in range(2000)}
    least, most = retry_after_bounds(base)
    assert seen <= set(range(least, most + 1))
    if most - least <= 20:
        assert {least, most} <= seen  # the bounds are reached, not only stated
    assert len(seen) > 1  # spread, not one value for every client


@pytest.mark.parametrize(("base", "bounds"), [(1, (1, 2)), (2, (1, 3)), (5, (3, 7)), (7, (5, 9))])
def test_the_retry_after_bounds_are_the_documented_ones(base: int, bounds: tuple[int, int]) -> None:
    """docs/ingest.md: +-40 % rounded down, at least 1 s either way, never below 1 s
    (rounded up, 7 s gave 4-10 s: +-43 %)."""
    assert retry_after_bounds(base) == bounds


def test_the_retry_after_never_varies_by_more_than_its_share_beyond_the_least_second() -> None:
    for base in range(1, 3601):
        least, most = retry_after_bounds(base)
        spread = max(1, base * RETRY_AFTER_JITTER_PERCENT / 100)
        assert least >= max(1, base - spread), base
        assert most <= base + spread, base
        assert most - base >= 1  # every setting spreads
