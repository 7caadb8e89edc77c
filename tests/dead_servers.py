"""Endpoints that are there and are not: for tests of deadlines and clear errors.

`DeadServer` is a TCP server that accepts and then never answers (`silent`),
sends an HTTP status line and a header a byte every 50 ms for ever
(`trickle`: each read succeeds within any per-read timeout), or a status line
and junk (`garbage`), or the head of a Kafka answer to the first request and no
more (`kafka_head`: a broker to a bare probe, nothing a client can start with);
`closed` is a port nothing listens on any more. `MetadataNeverAnswered` is a broker that
answers a client's version handshake and never its request for the cluster's metadata:
a client's start waits there, in its bootstrap.
`outcome_within` runs a call that must end by its own deadline on a thread and
fails the test, instead of hanging it, when it does not. `LateServer` is a
service that comes up later: it drops every connection until it is opened, then
forwards them to a real one (the suite's Kafka broker). `StallingClickHouse` answers
`/ping` (and the opening of a client), then stalls. `PromptServer`, the one that is
there, answers every request at once (but those it is told to answer late).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any


class _Listener:
    """A loopback TCP server: each connection it accepts is kept (closed by `close`) and
    handed to `_serve` on a thread of its own."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._held: list[socket.socket] = []

    def _listen(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._held.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop.set()
        self._server.close()
        for conn in self._held:
            conn.close()


class DeadServer(_Listener):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.url = f"http://127.0.0.1:{self.port}"
        self.asked = threading.Event()
        """Set once a request has come (an answer is under way, or withheld)."""
        if kind == "closed":  # nothing listens on the port any more
            self._server.close()
        self._listen()

    def _serve(self, conn: socket.socket) -> None:
        self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            self.asked.set()
            if self.kind == "silent":  # a request (or a TLS hello) read, and never answered
                return
            if self.kind == "kafka_head":  # size 4, correlation id 1, then nothing
                conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x01")
                return
            if self.kind == "garbage":
                conn.sendall(b"HTTP/1.1 200 OK\r\n" + bytes(range(256)) * 4 + b"\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.stop.wait(0.05):  # the server's pace, not the test waiting
                conn.sendall(b"a")
        except OSError:
            pass  # the client gave up


class MetadataNeverAnswered(_Listener):
    """A Kafka broker as far as the version handshake (ApiVersions, answered), then silent:
    `asked` is set when a metadata request came (never answered), `dropped` when a
    client closed a connection that had asked one."""

    _API_VERSIONS, _METADATA = 18, 3

    def __init__(self) -> None:
        super().__init__()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.asked = threading.Event()
        self.dropped = threading.Event()
        self._listen()

    def _serve(self, conn: socket.socket) -> None:
        asked = False
        try:
            while (request := _kafka_request(conn)) is not None:
                api_key, version, correlation_id = struct.unpack(">hhi", request[:8])
                if api_key == self._METADATA:
                    asked = True
                    self.asked.set()
                elif api_key == self._API_VERSIONS:
                    conn.sendall(_api_versions(correlation_id, version))
        except OSError:
            pass  # the client gave up
        if asked:
            self.dropped.set()


def _kafka_request(conn: socket.socket) -> bytes | None:
    """One size-prefixed Kafka request (its header and body), None once the client closed."""
    size = _read_exactly(conn, 4)
    return None if size is None else _read_exactly(conn, struct.unpack(">i", size)[0])


def _read_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _api_versions(correlation_id: int, version: int) -> bytes:
    """An ApiVersions answer (header v0 at every version): Metadata v0-v12 and ApiVersions
    v0-v2, which is all a client's bootstrap asks for."""
    apis = [(3, 0, 12), (18, 0, 2)]
    body = struct.pack(">ihi", correlation_id, 0, len(apis))
    body += b"".join(struct.pack(">hhh", *api) for api in apis)
    if version >= 1:
        body += struct.pack(">i", 0)  # throttle_time_ms
    return struct.pack(">i", len(body)) + body


class StallingClickHouse(_Listener):
    """A ClickHouse server that answers `GET /ping`, then stalls every other request as
    `kind` says: `silent` (reads it, answers nothing), `trickle` (a status line and a
    header a byte every 50 ms for ever), `trickle_body` (the headers of a streamed
    answer, then its body a byte every 50 ms for ever) or `slow_error` (each request
    answered 0.4 s late, with a ClickHouse error). With `opens` it first answers
    the requests a clickhouse-connect client sends while it opens (its version and time
    zone, the server's settings, a check), so the stall hits the calls after it."""

    _OPENING = (b"SELECT version(), timezone()", b"FROM system.settings", b"SELECT 1 AS check")

    def __init__(self, kind: str, *, opens: bool = True) -> None:
        super().__init__()
        self.kind = kind
        self.opens = opens
        self.stalled = threading.Event()
        """Set once a request is being stalled."""
        self.requests: list[bytes] = []
        self._listen()

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}/plant"

    def _serve(self, conn: socket.socket) -> None:
        try:
            while (request := read_request(conn)) is not None:
                self.requests.append(request)
                if request.startswith(b"GET /ping"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nOk.\n")
                elif self.opens and any(part in request for part in self._OPENING):
                    body = b"24.8.1.1\tUTC\n" if b"version()" in request else b""
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                else:
                    self.stalled.set()
                    self._stall(conn)
                    return
        except OSError:
            pass  # the client gave up

    def _stall(self, conn: socket.socket) -> None:
        if self.kind == "slow_error":  # every request answered, each a refusal 0.4 s late
            while not self.stop.wait(0.4):  # the server's pace, not the test waiting
                conn.sendall(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 31\r\n\r\n"
                    b"Code: 159. DB::Exception: slow\n"
                )
                if (request := read_request(conn)) is None:
                    return
                self.requests.append(request)
            return
        if self.kind == "silent":
            self.stop.wait()
            return
        if self.kind == "trickle":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            piece = b"a"
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"1\r\na\r\n"
        while not self.stop.wait(0.05):  # the server's pace, not the test waiting
            conn.sendall(piece)


class PromptServer(_Listener):
    """An HTTP server that answers every request at once with `ok`, a body streamed in two
    chunks; a `POST /late` 0.6 s late. `connections` counts the connections it took."""

    def __init__(self) -> None:
        super().__init__()
        self._listen()

    @property
    def connections(self) -> int:
        return len(self._held)

    def _serve(self, conn: socket.socket) -> None:
        try:
            while (request := read_request(conn)) is not None:
                if request.startswith(b"POST /late"):
                    self.stop.wait(0.6)  # the server's pace, not the test waiting
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"1\r\no\r\n1\r\nk\r\n0\r\n\r\n"
                )
        except OSError:
            pass  # the client gave up


def read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request with a `Content-Length` body (all clickhouse-connect sends here)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


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
