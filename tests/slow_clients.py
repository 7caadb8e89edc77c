"""Clients that hold a loopback HTTP server's connection the way a hostile or broken
local client does: a request dripped a byte at a time, a request never finished. Real
sockets; the pace of a drip is the wait for the server's answer or close, so the drip
stops as soon as the server acts."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
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


def held_past_a_bound(
    port: int,
    start: bytes,
    *,
    callers: int,
    bound: int,
    wait_for: Callable[[Callable[[], bool], float, str], object],
    within_s: float,
) -> tuple[int, int]:
    """`callers` connections each sending `start` and no more (a request never finished)
    to a server that serves at most `bound` at once; waits until those past the bound are
    closed by the server, or more threads than the bound were started. Returns how many
    were closed and how many threads more the process had then; closes every caller,
    then waits for the process's threads to fall back to what they were."""
    before = threading.active_count()
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(callers)]
    closed: set[int] = set()
    try:
        for caller in held:
            caller.sendall(start)
            caller.settimeout(0.05)

        def settled() -> bool:
            closed.update(i for i, c in enumerate(held) if i not in closed and closed_by_server(c))
            return len(closed) >= callers - bound or threading.active_count() > before + bound

        wait_for(settled, within_s, "the server to close the connections past its bound")
        threads = threading.active_count() - before
    finally:
        for caller in held:
            caller.close()
    wait_for(lambda: threading.active_count() == before, within_s, "the held connections' threads")
    return len(closed), threads
