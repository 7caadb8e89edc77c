"""A webhook attempt that is cancelled ends cancelled, whatever the HTTP stack does with it.

The notifier cancels its delivery workers on a stop that outlasted its grace and at the
loop's close. anyio before 4.16 (under httpx and httpcore) swallowed a cancel that came in
the loop turn its own cancel scope cancelled the task (agronholm/anyio#1214): its TCP
connect cancels such a scope as the connection is made. Cancelled by a timer at random
moments around the connect on a loopback receiver, 19 (4.14.1) and 49 (4.15.1) attempts
of 2,000 went on, posted and returned the 204, and the worker would have taken its next
job. Hence the floor in pyproject.toml, and `attempt`'s deadline is `schemas.deadline`,
which raises a cancel the body swallowed on leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
import httpcore
import httpx
from webhook_servers import serve, status

from sinks.webhooks.delivery import AttemptResult, attempt
from sinks.webhooks.targets import GuardedBackend, GuardedTransport, TargetPolicy, parse_networks

LOOPBACK = TargetPolicy(parse_networks("127.0.0.1"))


def test_anyio_hands_on_a_cancel_that_comes_in_its_scopes_own_cancelling_turn() -> None:
    """What the floor `anyio>=4.16` is for (fails on 4.15.1: "ran on")."""

    async def main() -> str:
        async def body() -> str:
            with anyio.CancelScope() as scope:
                task = asyncio.current_task()
                assert task is not None
                # the scope's own cancel, then a caller's, in one turn of the loop
                asyncio.get_running_loop().call_soon(lambda: (scope.cancel(), task.cancel()))
                await asyncio.sleep(5)
            return "ran on"

        try:
            return await asyncio.ensure_future(body())
        except asyncio.CancelledError:
            return "cancelled"

    assert asyncio.run(main()) == "cancelled"


class SwallowsACancel(httpcore.AsyncNetworkBackend):
    """Connects as anyio before 4.16 did when a cancel came in its scope's turn: the
    cancel is suppressed (the task's request stays pending) and the connect goes on."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.connecting = asyncio.Event()

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.connecting.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return await self.inner.connect_tcp(*args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def test_an_attempt_whose_cancel_the_http_stack_swallowed_still_ends_cancelled() -> None:
    async def main() -> AttemptResult | str:
        swallowing = SwallowsACancel()
        transport = GuardedTransport(GuardedBackend(LOOPBACK, inner=swallowing), max_connections=1)
        async with (
            serve(status(204)) as server,
            httpx.AsyncClient(transport=transport, timeout=5) as http,
        ):
            task = asyncio.ensure_future(
                attempt(http, server.url, None, "msg_1", "{}", deadline_s=5)
            )
            async with asyncio.timeout(10):
                await swallowing.connecting.wait()
            task.cancel()
            async with asyncio.timeout(10):
                await asyncio.wait({task})
            return "cancelled" if task.cancelled() else task.result()

    assert asyncio.run(main()) == "cancelled"  # not a 204 the worker goes on from
