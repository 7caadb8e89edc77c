"""Which addresses a webhook may reach: public ones, and the networks allowed in settings.

The subscriptions file may come from a less trusted place than the notifier,
which runs next to Kafka, ClickHouse and a cloud metadata service. So every
connection is checked on the address it actually goes to, at connect time:
the host name is resolved here, each resolved address must be public (not
private, loopback, link-local such as 169.254.169.254, unspecified, multicast
or reserved) or inside `allowed_networks`, and the socket connects to that
checked address, never to the name again. A name that resolved to a public
address when the file was loaded and to 127.0.0.1 later (DNS rebinding) is
refused like 127.0.0.1 itself. TLS still verifies the certificate against the
host name of the URL.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from sinks.daemon_executor import DaemonExecutor

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOW_SETTING = "CHAINWATCH_WEBHOOKS__ALLOWED_NETWORKS"


class TargetRefused(Exception):
    """The endpoint resolves only to addresses webhooks may not reach."""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`10.20.0.0/16, 127.0.0.1` → networks (a bare address is a /32 or /128)."""
    entries = (e.strip() for e in text.split(","))
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries if e)


@dataclass(frozen=True)
class TargetPolicy:
    allowed_networks: tuple[IPNetwork, ...] = ()

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in net for net in self.allowed_networks):
            return True
        return address.is_global and not address.is_multicast

    def refusal(self, host: str, addresses: Iterable[str]) -> str:
        shown = ", ".join(addresses)
        return (
            f"{host} resolves to {shown}: not a public address "
            f"(private, loopback, link-local, multicast or reserved); allow it with {ALLOW_SETTING}"
        )


class ThreadResolver:
    """`getaddrinfo` in `threads` threads of one endpoint's own.

    `getaddrinfo` blocks a thread until the DNS server answers or the resolver gives up
    (glibc: 5 s per try and server), and a cancelled attempt cannot stop it. In the
    event loop's shared default executor (a few threads) the attempts of one endpoint
    whose name's DNS does not answer held every thread, and every other endpoint's
    attempts timed out waiting for one: a slow endpoint delayed all of them.

    The threads are daemons (`DaemonExecutor`): a `ThreadPoolExecutor`'s are joined at
    interpreter exit, so a look-up hanging at stop kept the process alive ~30 s (or for
    ever) after `process_stopped`, past its stop deadline.
    """

    def __init__(self, threads: int, name: str = "webhook-resolve") -> None:
        self._pool = DaemonExecutor(threads, name)

    async def __call__(self, host: str, port: int) -> list[str]:
        lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = await asyncio.get_running_loop().run_in_executor(self._pool, lookup)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def close(self) -> None:
        """Queued look-ups are dropped; one under way ends with the resolver's timeout,
        or with the process: exit never waits for it."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy permits."""

    def __init__(
        self,
        policy: TargetPolicy,
        resolve: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
        *,
        threads: int = 1,
    ) -> None:
        """`resolve` None: the system's, in `threads` threads of this backend's own."""
        self._policy = policy
        self._owned: ThreadResolver | None = None
        if resolve is None:
            self._owned = resolve = ThreadResolver(threads)
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):  # None: no deadline; not wait_for (3.11)
                addresses = await self._resolve(host, port)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        permitted = [a for a in addresses if self._policy.permits(ipaddress.ip_address(a))]
        if not permitted:
            raise TargetRefused(self._policy.refusal(host, addresses))
        last: Exception | None = None
        for address in permitted:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("webhooks never connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connection pool built on the guarded backend.

    `ssl_context` shared by the transports of one endpoint: loading the trusted
    certificates takes ~40 ms of CPU per context. `owns_backend`: its close ends the
    backend's look-ups (False where transports share one backend, closed by its owner)."""

    def __init__(
        self,
        backend: GuardedBackend,
        *,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        owns_backend: bool = True,
    ) -> None:
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=context, trust_env=False)
        self._backend = backend
        self._owns_backend = owns_backend
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=backend,
        )

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:  # a pool that fails (or is cancelled) closing still ends the look-ups
            if self._owns_backend:
                self._backend.close()
