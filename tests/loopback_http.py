"""A threaded HTTP server on loopback for a test's receiver (webhooks, a gateway, Grafana).

Threaded, not asyncio: the code under test often runs its own event loop
(`asyncio.run`, a CLI command in-process), which the receiver must not share.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sinks.http_serving import serving_thread


@contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler], *, certificate: tuple[Path, Path] | None = None
) -> Iterator[int]:
    """Serve `handler` on a free loopback port (yielded) until the block ends; each
    request on a daemon thread, so a connection left open cannot hold the teardown.
    With `certificate` (its certificate and key files) over TLS."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if certificate is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = serving_thread(server)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


ReceiverAnswer = Callable[[str, dict[str, str], bytes], int]
"""A receiver's answer to one POST: path, headers (names lower-cased) and body in, status out."""


@contextmanager
def receiving(answer: ReceiverAnswer) -> Iterator[int]:
    """A webhook receiver on a free loopback port (yielded): each POST is handed to
    `answer`, and its status sent with an empty body, on a kept-alive connection as real
    receivers keep them."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = answer(self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as port:
        yield port
