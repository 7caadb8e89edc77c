"""Hostile HTTP receivers for webhook attempt tests: raw asyncio servers on loopback.

Each server answers every request with a scripted behaviour (drip, huge body,
fixed status) and records what it saw, so a test can assert what the client
did to it (requests made, bytes it had to send) without any mock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    port: int = 0
    requests: int = 0
    host_headers: list[str] = field(default_factory=list)
    body_bytes_sent: int = 0
    bodies: list[bytes] = field(default_factory=list)
    """Every request body received, in order."""
    heads: list[bytes] = field(default_factory=list)
    """Every request's line and headers, as sent, in order."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


async def _read_request(reader: asyncio.StreamReader, server: Server) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    server.heads.append(head)
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "host":
            server.host_headers.append(value.strip())
    server.bodies.append(await reader.readexactly(length))
    server.requests += 1


@contextlib.asynccontextmanager
async def serve(behaviour: Behaviour) -> AsyncIterator[Server]:
    state = Server()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while True:
                await _read_request(reader, state)
                await behaviour(reader, writer, state)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, as it should
        finally:
            state.finished.set()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def status(code: int, headers: dict[str, str] | None = None) -> Behaviour:
    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _s: Server) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        w.write(f"HTTP/1.1 {code} X\r\n{extra}Content-Length: 0\r\n\r\n".encode())
        await w.drain()

    return answer


def raw_status(code: int, header_line: bytes) -> Behaviour:
    """An answer with one header line sent as raw bytes (any encoding, or none)."""

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _s: Server) -> None:
        w.write(f"HTTP/1.1 {code} X\r\n".encode() + header_line + b"\r\nContent-Length: 0\r\n\r\n")
        await w.drain()

    return answer


def drip(interval_s: float) -> Behaviour:
    """A 200 whose status line arrives one byte every `interval_s`: never a read timeout."""

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _s: Server) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            w.write(bytes([byte]))
            await w.drain()
            await asyncio.sleep(interval_s)  # the behaviour under test: a slow sender

    return answer


def huge_error(total: int, chunk: int = 1 << 20) -> Behaviour:
    """A 500 with a `total`-byte body, sent as fast as the client takes it."""

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        w.write(f"HTTP/1.1 500 Boom\r\nContent-Length: {total}\r\n\r\n".encode())
        block = b"x" * chunk
        while s.body_bytes_sent < total:
            w.write(block)
            await w.drain()
            s.body_bytes_sent += len(block)

    return answer


def loopback_webhooks(subscriptions: Path, **overrides: object) -> dict[str, object]:
    """`webhooks` settings for a test whose receiver is on loopback, with fast retries."""
    return {
        "subscriptions": str(subscriptions),
        "allowed_networks": "127.0.0.1",
        "timeout_s": 5.0,
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.2,
        **overrides,
    }
