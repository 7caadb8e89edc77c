"""A ClickHouse server's host name is looked up within the call's deadline.

`getaddrinfo` has no timeout: a resolver that did not answer held the sink's `/ping`,
and a new connection of its client, past every deadline, for ever if it hung (the
watchdog had no socket to shut yet). No DNS is used: `socket.getaddrinfo` is replaced
by one that hangs for the test's own name (or resolves it to 127.0.0.1), and passes
every other name on.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.httputil import get_pool_manager
from dead_servers import StallingClickHouse, outcome_within

from chainwatch.cli_context import plain_store_error
from chainwatch.settings import Settings
from sinks.clickhouse import connection
from sinks.clickhouse.connection import StoreUnavailable, open_client
from sinks.clickhouse.deadline_pool import DeadlinePassed, Deadlines, bound
from sinks.http_deadline import DeadlineClient


@dataclass
class Resolver:
    """The system's resolver as the test makes it for `name`: hung until the test ends
    (`hangs`), or answering 127.0.0.1."""

    name: str = field(default_factory=lambda: f"ch-{uuid.uuid4().hex[:8]}.test")
    hangs: bool = True
    asked: threading.Event = field(default_factory=threading.Event)
    """Set once `name` was looked up."""
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Resolver]:
    made = Resolver()
    system = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (made.name, made.name.encode()):
            return system(host, port, *args, **kwargs)
        made.asked.set()
        if not made.hangs:
            return system("127.0.0.1", port, *args, **kwargs)
        made.release.wait(120)  # a resolver that does not answer, until the test ends
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield made
    made.release.set()


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONNECT_DEADLINE_S", "READ_DEADLINE_S", "WRITE_DEADLINE_S", "DDL_DEADLINE_S"):
        monkeypatch.setattr(connection, name, 1.0)


@pytest.mark.usefixtures("short_deadlines")
def test_opening_a_server_whose_name_does_not_resolve_is_one_line_at_the_deadline(
    resolver: Resolver,
) -> None:
    url = f"http://reader:s3cret@{resolver.name}:8123/plant"
    started = time.monotonic()
    error = outcome_within(
        30,
        lambda: open_client(
            Settings(clickhouse={"url": url}),  # type: ignore[arg-type]
            create_database=False,
            writer=False,
        ),
    )
    took = time.monotonic() - started
    assert isinstance(error, StoreUnavailable), error
    assert str(error) == (
        f"cannot reach ClickHouse at http://reader:***@{resolver.name}:8123/plant: "
        f"ConnectTimeout: {resolver.name} did not resolve within 1 s; "
        "check CHAINWATCH_CLICKHOUSE__URL"
    )
    assert plain_store_error(str(error)) == (  # the CLI's line
        f"cannot reach ClickHouse at http://reader:***@{resolver.name}:8123/plant "
        f"({resolver.name} did not resolve within 1 s); check CHAINWATCH_CLICKHOUSE__URL"
    )
    assert took < 5  # the deadline, 1 s, and a loaded machine's margin; it was for ever


def test_a_call_whose_new_connection_cannot_resolve_the_name_ends_at_its_deadline(
    resolver: Resolver,
) -> None:
    """The client's pool connects before it sends: the lookup was outside the request's
    deadline, the watchdog's, and the call waited on it for as long as it hung."""
    deadlines = Deadlines(1.0, "test")
    pool = bound(get_pool_manager(), deadlines)
    started = time.monotonic()

    def one_request() -> object:
        with deadlines.call():
            return pool.request("POST", f"http://{resolver.name}:8123/", body=b"x")

    error = outcome_within(30, one_request)
    took = time.monotonic() - started
    pool.clear()
    assert isinstance(error, DeadlinePassed), error
    assert str(error) == f"{resolver.name} did not resolve within 1 s"
    assert deadlines.cut == str(error)
    assert took < 5


def _stopped(resolver: Resolver, run: Callable[[], object], stop: Callable[[], None]) -> object:
    """What `run()` ended with when `stop()` came during its lookup, within 5 s of it."""
    resolver.asked.clear()
    ended: list[object] = []
    thread = threading.Thread(target=lambda: ended.append(outcome_within(30, run)))
    thread.start()
    assert resolver.asked.wait(30)
    started = time.monotonic()
    stop()
    thread.join(30)
    assert time.monotonic() - started < 5
    (outcome,) = ended
    return outcome


def test_a_stop_ends_a_lookup_under_way_at_once(resolver: Resolver) -> None:
    """The pool's (`Deadlines.abort`) and the `/ping` client's (`DeadlineClient.abort`),
    with the deadlines a process has: 600 s, not waited out."""
    deadlines = Deadlines(600.0, "test")
    pool = bound(get_pool_manager(), deadlines)
    http = DeadlineClient(deadline_s=600.0, timeout=600.0)

    def pooled() -> object:
        with deadlines.call():
            return pool.request("POST", f"http://{resolver.name}:8123/", body=b"x")

    def pinged() -> object:  # another port: a lookup of its own, not the pool's under way
        return http.get(f"http://{resolver.name}:8124/ping")

    try:
        by_pool = _stopped(resolver, pooled, deadlines.abort)
        by_ping = _stopped(resolver, pinged, lambda: http.abort("stopping"))
    finally:
        pool.clear()
        http.close()
    assert isinstance(by_pool, DeadlinePassed), by_pool
    assert str(by_pool) == "abandoned: the process is stopping"
    assert isinstance(by_ping, httpx.ConnectTimeout), by_ping
    assert str(by_ping) == "stopping"


def test_the_sink_told_to_stop_while_the_name_does_not_resolve_stops_at_once(
    resolver: Resolver,
) -> None:
    from chainwatch.sink_runner import _open_store

    settings = Settings(clickhouse={"url": f"http://{resolver.name}:8123/plant"})  # type: ignore[arg-type]

    async def signalled_meanwhile() -> tuple[object, float]:
        stop = asyncio.Event()
        opening = asyncio.ensure_future(_open_store(settings, stop))
        assert await asyncio.to_thread(resolver.asked.wait, 30)  # its `/ping` looks it up
        stop.set()
        started = time.monotonic()
        return await opening, time.monotonic() - started

    client, took = outcome_within(60, lambda: asyncio.run(signalled_meanwhile()))
    assert client is None
    assert took < connection.CONNECT_DEADLINE_S / 4


def test_a_server_named_by_a_name_that_resolves_is_read_as_before(resolver: Resolver) -> None:
    """The `/ping` client connects to the address the name resolved to (the request still
    names the host), the pool through urllib3's own connect."""
    resolver.hangs = False
    server = StallingClickHouse("silent")
    try:
        url = f"http://{resolver.name}:{server.port}/plant"
        client = open_client(
            Settings(clickhouse={"url": url}),  # type: ignore[arg-type]
            create_database=False,
            writer=False,
        )
        connection.close_client(client)
    finally:
        server.close()
    pings = [r for r in server.requests if r.startswith(b"GET /ping")]
    assert pings
    assert f"host: {resolver.name}:{server.port}".encode() in pings[0].lower()
    assert any(b"SELECT version(), timezone()" in r for r in server.requests)  # the pool's
