"""The standard library's threaded HTTP server, bounded for a process that serves it on the side.

Two servers run inside long-running processes next to their real work: the
operator endpoints (`chainwatch.ops_server`: `/metrics`, `/healthz`, `/readyz`) and
the embedded store's loopback query endpoint (`sinks.clickhouse.query_server`). Both
take their server class, their handler base and their thread from here, so they are
bounded alike:

- At most `MAX_CONNECTIONS` connections are served at once; one more is closed
  unanswered. `ThreadingHTTPServer` starts a thread per connection without bound, and
  each holds a thread and a file descriptor of the owning process: 1,500 connections
  that each sent a byte every few seconds held 1,500 threads and descriptors of the sink.
- Reading a request (request line, headers, body) has one deadline,
  `REQUEST_DEADLINE_S`, after which the connection is closed unanswered. The handler's
  `timeout` is per socket operation, so a client that sent a byte every few seconds
  kept its connection, and its slot, for ever: 32 such held the whole query endpoint
  (and `chainwatch sql` then said the store "serves no query endpoint").
- A caller that hangs up before its answer (a scrape cut by Prometheus's timeout, a
  probe, `chainwatch sql` stopped) is no error of the server: socketserver printed a
  traceback to the owning process's stderr, among its JSON log lines.

The serving thread: `serve_forever` looks for a stop every `poll_interval`, 0.5 s by
default, and `shutdown` waits for that look: every process's stop (its ops server),
every stop of the query server and every test teardown of a fake server waited up to
half a second. The ops, query and demo-receiver servers and the suite's fakes all take
their thread from here, so the interval is said once.
"""

from __future__ import annotations

import io
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STOP_POLL_S = 0.05
"""How often the serving thread looks for a stop (20 looks a second cost nothing measurable)."""

MAX_CONNECTIONS = 32
"""Connections served at once; one more is closed unanswered. Local tools and a scraper
or prober open one or two at a time."""

REQUEST_DEADLINE_S = 10.0
"""Seconds from the start of a request to the last byte of its body; past them the
connection is closed unanswered. A request line, a few headers and a body of at most a
MiB arrive in milliseconds from a real client, even a slow one; only a client that
drips (or sends nothing) reaches this. Answering is not counted: a slow read of the
store is bounded by its own limits."""

SOCKET_TIMEOUT_S = 10.0
"""Seconds one socket operation may wait: the handler's `timeout` (a write of the answer
to a caller that stops reading, and each read, within the request's deadline)."""


def serving_thread(server: socketserver.BaseServer, name: str | None = None) -> threading.Thread:
    """The daemon thread that serves `server` until its `shutdown()`; not started yet."""
    return threading.Thread(
        target=server.serve_forever, args=(STOP_POLL_S,), name=name, daemon=True
    )


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each waiting at most until `deadline` (a `time.monotonic`
    value; None: only the per-operation timeout). Past it a read raises TimeoutError,
    which `BaseHTTPRequestHandler.handle_one_request` answers by closing the connection
    (whether the request line, a header or, in the handler's method, the body was being
    read). The socket's own timeout is put back after each read, for the writes."""

    def __init__(self, sock: socket.socket, per_operation_s: float | None) -> None:
        super().__init__()
        self._sock = sock
        self._per_operation_s = per_operation_s
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wait = self._per_operation_s
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request was not read within its deadline")
            wait = left if wait is None else min(wait, left)
        self._sock.settimeout(wait)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._per_operation_s)


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """The handler base of a `BoundedHTTPServer`: each request is read within the server's
    `request_deadline_s` (the body too, when the method reads it from `self.rfile`)."""

    server: BoundedHTTPServer
    timeout = SOCKET_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the standard buffered reader, replaced by one under the deadline
        self._reader = _DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.server.request_deadline_s
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no access log (probes every few seconds would flood it), and a request
        cut at its deadline is no error of the server."""


class BoundedHTTPServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` serving at most `max_connections` connections at once (any
    more are closed unanswered and hold no thread), each request read within
    `request_deadline_s`, and quiet about callers that hang up."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BoundedRequestHandler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.request_deadline_s = request_deadline_s
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection while fewer than the bound are served, else closed."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: it would never give its slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that went away before its answer (a connection reset, a broken pipe, a
        write that timed out) is no error of the server: socketserver printed a traceback
        to the owning process's stderr, among its JSON log lines. Anything else is still
        reported as socketserver does (the handlers answer their own errors, so that would
        be a bug)."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)
