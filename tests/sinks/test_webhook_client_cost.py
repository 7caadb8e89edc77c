"""What one webhook POST costs the notifier's process beyond the request itself (no Kafka)."""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

from standardwebhooks import Webhook
from webhook_servers import Server, serve, status

from sinks.webhooks.delivery import RetryPolicy, WorkerClients, attempt, http_client
from sinks.webhooks.targets import TargetPolicy, parse_networks

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOOPBACK = TargetPolicy(parse_networks("127.0.0.1"))


class ModuleLookups(importlib.abc.MetaPathFinder):
    """Notes every module the import system goes looking for, and finds none itself."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        self.names.append(fullname)
        return None


def test_a_post_looks_for_no_module() -> None:
    """httpcore asks, at every step of its connection pool, which async library runs, by
    importing sniffio. anyio 4.16 no longer brings sniffio, and without it every one of
    those imports failed anew, searching every directory of `sys.path`: ~10 a POST and
    ~2.5 ms of CPU, which held a notifier to ~350 deliveries/s where the receiver took
    ~15,000 (bench/webhooks.py). After the first POST (its lazy imports), none looks up
    a module."""
    lookups = ModuleLookups()

    async def post_twenty() -> list[int]:
        policy = RetryPolicy(timeout_s=5.0)
        signer = Webhook(SECRET)
        async with (
            serve(status(204)) as server,
            http_client(policy, targets=LOOPBACK, concurrency=4) as http,
        ):
            first = await attempt(http, server.url, signer, "msg_0", "{}", deadline_s=5.0)
            sys.meta_path.insert(0, lookups)
            try:
                posts = [
                    attempt(http, server.url, signer, f"msg_{n}", "{}", deadline_s=5.0)
                    for n in range(1, 21)
                ]
                results = await asyncio.gather(*posts)
            finally:
                sys.meta_path.remove(lookups)
        return [first.status, *(r.status for r in results)]

    assert asyncio.run(asyncio.wait_for(post_twenty(), timeout=60)) == [204] * 21
    assert lookups.names == []


def test_each_worker_posts_on_one_connection_of_its_own_and_the_close_ends_them_all() -> None:
    """One client with a pool of `concurrency` connections checked every connection of
    the pool twice a request (~1 ms of CPU a POST at 16, bench/webhooks.py). Each
    worker posts one delivery at a time, so each has a client of one connection, kept
    alive between its posts; the endpoint's close ends every client and the look-ups."""
    connections: list[int] = []

    async def post_through_each() -> tuple[list[int], list[bool], int]:
        async def counting(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
        ) -> None:
            connections.append(writer.get_extra_info("peername")[1])
            await status(204)(reader, writer, server)

        clients = WorkerClients(RetryPolicy(timeout_s=5.0), targets=LOOPBACK, workers=3)
        signer = Webhook(SECRET)
        async with serve(counting) as server:
            results = []
            for round_ in range(4):
                results += await asyncio.gather(
                    *(
                        attempt(client, server.url, signer, f"m{round_}{n}", "{}", deadline_s=5.0)
                        for n, client in enumerate(clients.each)
                    )
                )
            await clients.aclose()
        return [r.status for r in results], [c.is_closed for c in clients.each], len(clients.each)

    statuses, closed, count = asyncio.run(asyncio.wait_for(post_through_each(), timeout=60))
    assert statuses == [204] * 12
    assert count == 3
    assert closed == [True, True, True]
    assert len(set(connections)) == 3  # one connection each, kept for all four rounds
