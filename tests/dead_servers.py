"""Endpoints that are there and are not: for tests of deadlines and clear errors.

`DeadServer` is a TCP server that accepts and then never answers (`silent`),
sends an HTTP status line and a header a byte every 50 ms for ever
(`trickle`: each read succeeds within any per-read timeout), or a status line
and junk (`garbage`); `closed` is a port nothing listens on any more.
`outcome_within` runs a call that must end by its own deadline on a thread and
fails the test, instead of hanging it, when it does not.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any


class DeadServer:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        if kind == "closed":  # nothing listens on the port any more
            self._server.close()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._held.append(conn)
            if self.kind != "silent":
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.kind == "garbage":
                conn.sendall(b"HTTP/1.1 200 OK\r\n" + bytes(range(256)) * 4 + b"\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.stop.wait(0.05):  # the server's pace, not the test waiting
                conn.sendall(b"a")
        except OSError:
            pass  # the client gave up

    def close(self) -> None:
        self.stop.set()
        self._server.close()
        for conn in self._held:
            conn.close()


def outcome_within(seconds: float, run: Callable[[], Any]) -> Any:
    """What `run()` returned or raised; the test fails if it still runs after `seconds`."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(run())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome[0]
