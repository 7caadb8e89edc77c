"""The lingering close on a real socket: it ends with the client, or within its bounds.

(The gateway's own answers that linger: test_gateway_slow_clients.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from chainwatch.lingering_close import Linger, LingeringTransport

ANSWER = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class Answering(asyncio.Protocol):
    """Answers the first bytes and closes through `LingeringTransport`, as the gateway's
    protocol does; records when the connection ended."""

    def __init__(
        self, linger: Linger, partly_received: bool, pause_first: bool, answer: bytes
    ) -> None:
        self.linger, self.partly_received, self.pause_first = linger, partly_received, pause_first
        self.answer = answer
        self.closed_at: float | None = None
        self.ended = asyncio.Event()
        self.transport: LingeringTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = LingeringTransport(transport, self.linger, lambda: self.partly_received)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.dropped(data) or self.closed_at is not None:
            return
        if self.pause_first:  # as uvicorn does with a body its app has not asked for
            self.transport.pause_reading()
        self.transport.write(self.answer)
        self.transport.close()
        self.closed_at = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.transport.lost()
        self.ended.set()


Client = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(
    linger: Linger,
    client: Client,
    *,
    partly_received: bool = True,
    pause_first: bool = False,
    stop: bool = False,
    body: bytes = b"",
) -> float:
    """Seconds from the server's close to its connection's end, with `client` talking."""
    loop = asyncio.get_running_loop()
    server_side: list[Answering] = []

    def protocol() -> Answering:
        head = ANSWER.replace(b"content-length: 0", b"content-length: %d" % len(body))
        server_side.append(Answering(linger, partly_received, pause_first, head + body))
        return server_side[-1]

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST / HTTP/1.1\r\ncontent-length: 100000000\r\n\r\n[")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head == ANSWER.replace(b"content-length: 0", b"content-length: %d" % len(body))
        await client(reader, writer)
        if stop:  # the server stops while the connection lingers
            transport = server_side[0].transport
            assert transport is not None
            assert transport.lingering
            transport.stop()
        async with asyncio.timeout(30):
            await server_side[0].ended.wait()
        closed_at = server_side[0].closed_at
        assert closed_at is not None
        return loop.time() - closed_at
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def _reads_the_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    assert await reader.read() == b""  # the answer is followed by the server's FIN


def test_it_ends_when_the_client_closes_its_side() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _reads_the_end(reader, writer)
        writer.write(b" " * 10_000)  # still sending: read and dropped, not a reset
        await writer.drain()
        writer.write_eof()

    assert asyncio.run(_serve(Linger(max_s=60, max_bytes=1 << 20), client)) < 10


def test_it_ends_after_its_time_when_the_client_never_closes() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _reads_the_end(reader, writer)

    took = asyncio.run(_serve(Linger(max_s=0.5, max_bytes=1 << 20), client))
    assert 0.5 <= took < 10


def test_it_ends_once_its_bytes_were_dropped_even_when_reading_was_paused() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _reads_the_end(reader, writer)
        writer.write(b" " * 5000)  # beyond the 4000 dropped at most
        await writer.drain()

    took = asyncio.run(_serve(Linger(max_s=60, max_bytes=4000), client, pause_first=True))
    assert took < 10


def test_a_connection_with_no_request_under_way_closes_at_once() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _reads_the_end(reader, writer)

    took = asyncio.run(_serve(Linger(max_s=60, max_bytes=1 << 20), client, partly_received=False))
    assert took < 10


def test_a_linger_of_zero_closes_at_once() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _reads_the_end(reader, writer)

    assert asyncio.run(_serve(Linger(max_s=0, max_bytes=1 << 20), client)) < 10


def test_a_stop_ends_a_lingering_close() -> None:
    """(A connection left open when the server's event loop closes keeps it from closing.)"""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _reads_the_end(reader, writer)

    assert asyncio.run(_serve(Linger(max_s=60, max_bytes=1 << 20), client, stop=True)) < 10


def test_it_ends_after_its_time_when_the_client_never_reads_its_answer() -> None:
    """A close waits for the answer to be written: to a client that neither reads nor
    closes, a large answer (more than the sockets hold) kept the connection open for ever,
    one of `limit_connections`, past the linger's bound."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None  # reads nothing past the answer's head, never closes

    body = b"x" * (64 << 20)
    took = asyncio.run(_serve(Linger(max_s=0.5, max_bytes=1 << 20), client, body=body))
    assert 0.5 <= took < 10
