"""A threaded HTTP server on loopback for a test's receiver (webhooks, a gateway, Grafana).

Threaded, not asyncio: the code under test often runs its own event loop
(`asyncio.run`, a CLI command in-process), which the receiver must not share.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sinks.http_serving import serving_thread


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve `handler` on a free loopback port (yielded) until the block ends; each
    request on a daemon thread, so a connection left open cannot hold the teardown."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = serving_thread(server)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
