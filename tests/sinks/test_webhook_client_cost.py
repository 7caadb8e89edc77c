"""What one webhook POST costs the notifier's process beyond the request itself (no Kafka)."""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

from standardwebhooks import Webhook
from webhook_servers import serve, status

from sinks.webhooks.delivery import RetryPolicy, attempt, http_client
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
