"""`stopped_first`: a stop that comes while a call runs is seen at once, and a call that
ends first is handed back done, whatever its outcome."""

from __future__ import annotations

import asyncio

import pytest

from sinks.stop_race import stopped_first


def test_a_stop_during_the_call_is_seen_while_the_call_still_runs() -> None:
    async def main() -> None:
        stop, release = asyncio.Event(), asyncio.Event()
        work = asyncio.ensure_future(release.wait())
        asyncio.get_running_loop().call_soon(stop.set)
        assert await asyncio.wait_for(stopped_first(work, stop), timeout=5)
        assert not work.done()  # left to the caller
        release.set()
        await work

    asyncio.run(main())


def test_a_call_that_ends_first_is_handed_back_done_with_its_error() -> None:
    async def fails() -> None:
        raise RuntimeError("refused")

    async def main() -> None:
        stop = asyncio.Event()
        work = asyncio.ensure_future(fails())
        assert not await asyncio.wait_for(stopped_first(work, stop), timeout=5)
        with pytest.raises(RuntimeError, match="refused"):
            work.result()

    asyncio.run(main())
