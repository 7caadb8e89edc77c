"""Endpoints that are there and are not: for tests of deadlines and clear errors.

`DeadServer` is a TCP server that accepts and then never answers (`silent`),
sends an HTTP status line and a header a byte every 50 ms for ever
(`trickle`: each read succeeds within any per-read timeout), or a status line
and junk (`garbage`); `closed` is a port nothing listens on any more.
`outcome_within` runs a call that must end by its own deadline on a thread and
fails the test, instead of hanging it, when it does not. `LateServer` is a
service that comes up later: it drops every connection until it is opened, then
forwards them to a real one (the suite's Kafka broker).
"""

from __future__ import annotations

import contextlib
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


class LateServer:
    """A service that comes up after its client started: until `open()` the port accepts
    and at once closes every connection, then it forwards each to `upstream`
    ("host:port"), byte for byte both ways."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._open = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def open(self) -> None:
        self._open.set()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                conn.close()
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            self._held += [conn, upstream]
            for source, sink in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._server.close()
        for conn in self._held:
            conn.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass  # either side closed
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
