"""Waiting for a call or a stop, whichever comes first.

A long-running process's stop must not wait for a blocking call's own deadline (a
ClickHouse read, a Kafka look-up): the call runs on a thread and the stop races it.
What to do with the call left running (abort its requests, leave its daemon thread,
wait for an embedded store that cannot abort) is the caller's, so this only waits.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def stopped_first(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait until `work` is done or `stop` is set: True when the stop came first (`work`
    still runs), False when `work` is done (its result or error is the caller's)."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((work, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    return not work.done()
