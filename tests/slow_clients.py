"""Clients that hold a loopback HTTP server's connection the way a hostile or broken
local client does: a request dripped a byte at a time, a request never finished. Real
sockets; the pace of a drip is the wait for the server's answer or close, so the drip
stops as soon as the server acts."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Dripped:
    closed: bool
    """The server closed the connection (an end of stream or a reset)."""
    after_s: float
    """Seconds from the connect to the close, or to giving up."""
    answer: bytes
    """What the server sent back (nothing when it closed the connection unanswered)."""


def drip(
    port: int, start: bytes, byte: bytes = b"a", *, pace_s: float = 0.05, give_up_s: float = 5.0
) -> Dripped:
    """Send `start` at once, then `byte` once per `pace_s` (each a new read for the
    server, well within its per-read timeout), until the server closes the connection or
    `give_up_s` pass."""
    answer = b""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=give_up_s) as sock:
        try:
            sock.sendall(start)
            while time.monotonic() - began < give_up_s:
                readable, _, _ = select.select([sock], [], [], pace_s)
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        return Dripped(True, time.monotonic() - began, answer)
                    answer += data
                    continue
                sock.sendall(byte)
        except (ConnectionResetError, BrokenPipeError):
            return Dripped(True, time.monotonic() - began, answer)
    return Dripped(False, time.monotonic() - began, answer)


def closed_by_server(caller: socket.socket) -> bool:
    """Whether the server closed `caller` (which has a short timeout set), without waiting."""
    try:
        return caller.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
