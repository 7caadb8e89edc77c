"""The rest of a body the gateway answered before reading it: bounded, on a kept connection too.

An early answer (401, 403, 413, 415, 503 ...) that keeps the connection is followed by
the rest of its request's body, which the gateway reads and drops so the connection
can serve the next request. That reading had no byte cap: refused, a client declaring
10 GB, or sending chunks for ever, pushed all it could into a connection slot for
`header_timeout_s`. Now at most `lingering_close_bytes` of it are dropped on a kept
connection: a declared rest beyond that is answered with `Connection: close`, and a
chunked one that goes past it closes the connection, both through the lingering close.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gateway_harness import Harness, token_of
from readable import readable_within

CAP = 1024 * 1024
"""`lingering_close_bytes` at its default: what is dropped of an unread body at most."""

RECEIVE_BUFFER_MAX = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
"""How far the gateway's socket may buffer what the client sends (the kernel grows it)."""

MOST = 64 * 1024 * 1024 + 2 * RECEIVE_BUFFER_MAX
"""What a test pushes at most: far beyond the cap and what the kernels may buffer on
loopback (the gateway's receive buffer, the client's send buffer, held at 1 MiB)."""

PIECE = 256 * 1024


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., Harness]) -> Harness:
    """A gateway whose bounds of time are far off: what ends a connection here is bytes."""
    return gateway_factory(header_timeout_s=60.0, lingering_close_s=60.0)


class Answers:
    """Reads a connection's answers one at a time (pipelined ones follow each other)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the connection ended before a whole answer: {self.buffer!r}"
        self.buffer += chunk

    def next(self, timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        self.sock.settimeout(timeout_s)
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def interim(self, timeout_s: float = 10.0) -> bytes:
        """The status line of an interim answer (`100 Continue`: no body)."""
        self.sock.settimeout(timeout_s)
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def ended(self, timeout_s: float = 10.0) -> bool:
        """The gateway ended the connection (its FIN, or a reset), nothing more answered."""
        self.sock.settimeout(timeout_s)
        try:
            rest = self.buffer + self.sock.recv(65536)
        except ConnectionResetError:
            return True
        assert not rest.strip(), f"more was answered: {rest!r}"
        return rest == b""


def connect(gw: Harness) -> socket.socket:
    host, port = gw.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CAP)
    return sock


def refused_post(framing: str) -> bytes:
    """A POST of scans without a token (answered 401 before its body is read)."""
    return (
        f"POST /v1/scans HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{framing}\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def push_until_refused(sock: socket.socket, piece: bytes) -> int:
    """Sends `piece` after `piece` (a client sending its body on after the answer) until the
    gateway refuses more (a reset) or `MOST` bytes went; how many went."""
    sent = 0
    try:
        while sent < MOST:
            sock.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def answered_before_the_body(sock: socket.socket) -> None:
    assert readable_within(sock, 10), "no answer before the body"


@contextmanager
def refused_early(gw: Harness, framing: str) -> Iterator[tuple[Answers, int, dict[str, str]]]:
    """A connection that sent the head of `refused_post(framing)` and read its answer,
    which came before any of the body: the connection's answers, the status and headers."""
    with connect(gw) as sock:
        sock.sendall(refused_post(framing))
        answered_before_the_body(sock)
        answers = Answers(sock)
        status, headers, _ = answers.next()
        yield answers, status, headers


def test_a_refused_post_declaring_10_gb_is_answered_connection_close_and_its_body_not_taken(
    gw: Harness,
) -> None:
    """uvicorn read such a body on for `header_timeout_s`, with no byte cap."""
    with refused_early(gw, f"Content-Length: {10 * 1024**3}\r\n") as (answers, status, headers):
        sent = push_until_refused(answers.sock, b" " * PIECE)
        assert sent < MOST, f"the gateway took {sent} bytes of a body it had refused"
        assert answers.ended()
    assert status == 401
    assert headers["connection"] == "close"


def test_a_refused_chunked_body_is_dropped_up_to_the_cap_then_the_connection_closes(
    gw: Harness,
) -> None:
    """A chunked body's rest is not known at the answer, which keeps the connection; past
    the cap the connection is shut (the answer was read), and closed soon after."""
    with refused_early(gw, "Transfer-Encoding: chunked\r\n") as (answers, status, headers):
        sent = push_until_refused(answers.sock, chunk(b" " * PIECE))
        assert sent < MOST, f"the gateway took {sent} bytes of a body it had refused"
        assert answers.ended()
    assert status == 401
    assert "connection" not in headers


@pytest.mark.parametrize(("declared", "kept"), [(CAP, True), (CAP + 1, False)])
def test_a_declared_rest_up_to_the_cap_keeps_the_connection_one_byte_more_closes_it(
    gw: Harness, declared: int, kept: bool
) -> None:
    with refused_early(gw, f"Content-Length: {declared}\r\n") as (answers, status, headers):
        assert status == 401
        assert ("connection" not in headers) is kept, headers
        if kept:
            answers.sock.sendall(b" " * declared + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            status, _, body = answers.next()
            assert (status, body) == (200, b'{"status":"ok"}')
        else:
            assert headers["connection"] == "close"
            assert answers.ended()


def test_a_small_chunked_body_after_an_early_answer_is_dropped_and_the_connection_serves_on(
    gw: Harness,
) -> None:
    with refused_early(gw, "Transfer-Encoding: chunked\r\n") as (answers, status, _):
        assert status == 401
        body = b"".join(chunk(b" " * 10_000) for _ in range(50)) + b"0\r\n\r\n"
        answers.sock.sendall(body + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        status, headers, _ = answers.next()
    assert status == 200
    assert "connection" not in headers


def test_a_pipelined_post_declaring_10_gb_is_answered_connection_close_after_the_request_before(
    gw: Harness,
) -> None:
    """The POST waits behind the /healthz sent before it (pipelining) and is answered once
    that one was: its rest is judged then, as it is for a request answered at once."""
    with connect(gw) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
            + refused_post(f"Content-Length: {10 * 1024**3}\r\n")
            + b"[ "
        )
        answers = Answers(sock)
        first, first_headers, _ = answers.next()
        second, second_headers, _ = answers.next()
        assert answers.ended()  # the gateway shut its side after the answer
    assert (first, second) == (200, 401)
    assert "connection" not in first_headers
    assert second_headers["connection"] == "close"


def test_requests_pipelined_after_an_ignored_upgrade_within_the_dropped_rest_are_all_answered(
    gw: Harness,
) -> None:
    """The read that crosses the cap holds the body's end, a request whose `Upgrade` is
    ignored and part of the next request: what followed the upgrade is parsed before the
    read's part beyond the cap (that part was parsed first, from the middle of a request:
    400, and both requests after the upgrade were lost)."""
    upgrade = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    padded = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Pad: " + b"p" * 400 + b"\r\n\r\n"
    healthz = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
    declared = CAP - len(upgrade) - 200  # the cap falls inside `padded`
    with refused_early(gw, f"Content-Length: {declared}\r\n") as (answers, status, headers):
        assert (status, "connection" in headers) == (401, False)
        answers.sock.sendall(b" " * (declared - 50))
        answers.sock.sendall(b" " * 50 + upgrade + padded + healthz)  # one segment: read at once
        for _ in range(3):
            status, headers, body = answers.next()
            assert (status, body) == (200, b'{"status":"ok"}')
            assert "connection" not in headers


def test_an_expect_100_continue_post_answered_before_its_body_was_asked_for_closes_after(
    gw: Harness,
) -> None:
    """No `100 Continue` went, so the client may never send the body; its next request on
    the connection was read as that body (`GET /` taken as the 5 bytes, `healthz ...`
    parsed as a request: 400)."""
    expecting = "Content-Length: 5\r\nExpect: 100-continue\r\n"
    with refused_early(gw, expecting) as (answers, status, headers):
        assert (status, headers.get("connection")) == (401, "close")
        assert answers.ended()


def test_an_early_answer_after_100_continue_keeps_the_connection(gw: Harness) -> None:
    """Once asked for, the body comes: its rest is dropped as any other's."""
    items = b"[" + b"{}," * 30_000  # past `max_items` within the first 64 KiB: 413 mid-body
    with connect(gw) as sock:
        sock.sendall(
            b"POST /v1/scans HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token_of('admin')}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        )
        answers = Answers(sock)
        assert answers.interim() == b"HTTP/1.1 100 Continue"
        sock.sendall(chunk(items))
        status, headers, _ = answers.next()
        assert (status, "connection" in headers) == (413, False), headers
        sock.sendall(b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert answers.next()[0] == 200
