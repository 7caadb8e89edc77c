"""The ops server (`/metrics`, `/healthz`, `/readyz` of every long-running process) is
bounded as the query endpoint is (sinks/http_serving.py): connections past the bound are
closed and hold no thread, a request is read within one deadline, and a caller that hangs
up puts no traceback on the process's stderr. Real sockets on loopback, no broker."""

from __future__ import annotations

import socket
import struct
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slow_clients import drip, held_past_a_bound

from chainwatch.ops_server import OpsServer, serve_ops
from sinks.http_serving import REQUEST_DEADLINE_S
from tests.sinks.sink_harness import wait_for

DEADLINE_S = 10.0


def _scrape(ops: OpsServer) -> int:
    with urllib.request.urlopen(ops.metrics_url, timeout=DEADLINE_S) as answer:
        return int(answer.status)


@pytest.fixture
def ops() -> Iterator[OpsServer]:
    server = serve_ops("127.0.0.1", 0, request_deadline_s=0.5)
    try:
        yield server
    finally:
        server.stop()


def test_connections_past_the_bound_are_closed_and_hold_no_thread() -> None:
    """Before: a thread per connection without bound (the standard ThreadingHTTPServer):
    12 unfinished requests held 12 threads of the process."""
    ops = serve_ops("127.0.0.1", 0, max_connections=4)
    try:
        closed, threads = held_past_a_bound(
            ops.port, b"GET /metrics HTTP/1.1\r\n", callers=12, bound=4,
            wait_for=wait_for, within_s=DEADLINE_S,
        )  # fmt: skip
        assert threads <= 4
        assert closed == 8
        assert _scrape(ops) == 200
    finally:
        ops.stop()


def test_a_caller_gone_before_its_answer_puts_no_traceback_on_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A probe or a scrape cut by its timeout while the answer is made: the server's write
    fails, and socketserver printed `Exception occurred during processing of request` and a
    traceback to the process's stderr, in the middle of its JSON log lines."""
    asked, answer = threading.Event(), threading.Event()

    def health() -> tuple[bool, dict[str, Any]]:
        asked.set()
        answer.wait(DEADLINE_S)
        return True, {}

    ops = serve_ops("127.0.0.1", 0, health=health)
    before = threading.active_count()
    try:
        caller = socket.create_connection(("127.0.0.1", ops.port))
        caller.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert asked.wait(DEADLINE_S), "the probe was not asked"
        caller.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        caller.close()  # a reset: the answer's write fails at once
        answer.set()
        wait_for(
            lambda: threading.active_count() == before, DEADLINE_S, "the request's thread to end"
        )
        assert "Traceback" not in capfd.readouterr().err
        assert _scrape(ops) == 200
    finally:
        ops.stop()


@pytest.mark.parametrize(
    "start",
    [b"GET /metr", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: "],
    ids=["request line", "headers"],
)
def test_a_request_dripped_a_byte_at_a_time_is_cut_at_the_deadline(
    ops: OpsServer, start: bytes
) -> None:
    """Before: the handler's timeout was per read, so a client sending a byte every 50 ms
    (or every few seconds) kept its connection, and its thread, for ever; 32 such held
    every slot, and the process answered no scrape or probe."""
    assert 0 < REQUEST_DEADLINE_S <= 30  # the default: a deadline, never the library's none
    dripped = drip(ops.port, start, give_up_s=5.0)
    assert dripped.closed, f"still open after {dripped.after_s:.1f}s"
    assert dripped.answer == b""  # closed unanswered
    assert 0.5 <= dripped.after_s < 4.0, dripped.after_s
    assert _scrape(ops) == 200


def test_a_normal_request_is_answered_under_the_deadline(ops: OpsServer) -> None:
    dripped = drip(ops.port, b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n", give_up_s=5.0)
    assert dripped.closed
    assert dripped.answer.startswith(b"HTTP/1.0 200 "), dripped.answer[:100]
    assert dripped.answer.endswith(b'{"alive": true}\n')
