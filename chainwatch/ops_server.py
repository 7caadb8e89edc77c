"""The operator endpoints of a long-running process: `/metrics`, `/healthz`, `/readyz`.

One small HTTP server in a daemon thread, so a scrape or a probe is answered
even while the process's event loop is busy; it only reads (a Prometheus
registry, and probe callables that read flags and never block). The sink, the
notifier and the worker all serve through it; the gateway serves the same
paths from its own FastAPI app.

- `/metrics`: the Prometheus text format of `registry`.
- `/healthz`: 200 while the process is alive (`health()` true), else 503.
- `/readyz`: 200 when `ready()` is true, else 503; 404 for a process without a
  readiness notion. Both answer a small JSON object with the reasons.

Port rule: `bind_ops` tries `port`, then the next `tries - 1` ports (several
workers on one host take 9460, 9461, ...), then any free port; the port bound
is in `server.port` (and in the process's log).

Bounds (`sinks.http_serving`, shared with the query endpoint): at most
`MAX_CONNECTIONS` connections at once, each request read within
`REQUEST_DEADLINE_S`, and no traceback on stderr when a caller hangs up (a scrape
cut by Prometheus's timeout, a probe).
"""

from __future__ import annotations

import errno
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from chainwatch.errors import UserError
from sinks.http_serving import (
    MAX_CONNECTIONS,
    REQUEST_DEADLINE_S,
    BoundedHTTPServer,
    BoundedRequestHandler,
    serving_thread,
)

Probe = Callable[[], tuple[bool, dict[str, Any]]]
"""Answers (ok, details) at once, from any thread."""


def _alive() -> tuple[bool, dict[str, Any]]:
    return True, {}


class OpsServer(BoundedHTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        health: Probe,
        ready: Probe | None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.registry = registry
        self.health = health
        self.ready = ready
        self._thread: threading.Thread | None = None
        super().__init__(
            address,
            _Handler,
            max_connections=max_connections,
            request_deadline_s=request_deadline_s,
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def metrics_url(self) -> str:
        host = self.server_address[0]
        return metrics_url(host.decode() if isinstance(host, bytes) else str(host), self.port)

    def start(self) -> OpsServer:
        self._thread = serving_thread(self, name=f"ops-http-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()


class _Handler(BoundedRequestHandler):
    server: OpsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._probe(self.server.health, "alive")
        elif path == "/readyz" and self.server.ready is not None:
            self._probe(self.server.ready, "ready")
        else:
            self._send(404, b'{"error":"not_found"}\n', "application/json")

    def _probe(self, probe: Probe, key: str) -> None:
        try:
            ok, details = probe()
        except Exception as exc:  # a broken probe is "not ok", never a crashed thread
            ok, details = False, {"error": f"{type(exc).__name__}: {exc}"}
        body = json.dumps({key: ok, **details}, sort_keys=True, default=str).encode() + b"\n"
        self._send(200 if ok else 503, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def bind_ops(
    host: str,
    port: int,
    *,
    registry: CollectorRegistry = REGISTRY,
    health: Probe = _alive,
    ready: Probe | None = None,
    tries: int = 1,
    any_port_last: bool = False,
    max_connections: int = MAX_CONNECTIONS,
    request_deadline_s: float = REQUEST_DEADLINE_S,
) -> OpsServer:
    """Bind (not yet serving) on `host`: `port`, then the next `tries - 1` ports, then,
    with `any_port_last`, any free port. A UserError when nothing could be bound (ports
    in use, an address not of this host). The bounds are `sinks.http_serving`'s."""
    candidates = [port + n for n in range(tries) if port + n <= 65535]
    if any_port_last:
        candidates.append(0)
    last: OSError | None = None
    for candidate in candidates:
        try:
            return OpsServer(
                (host, candidate),
                registry,
                health,
                ready,
                max_connections=max_connections,
                request_deadline_s=request_deadline_s,
            )
        except OSError as exc:
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
    span = f"{port}" if tries == 1 else f"{port}-{port + tries - 1}"
    raise UserError(
        f"cannot serve metrics on {host}:{span}: {last.strerror if last else 'no port'} "
        "(CHAINWATCH_METRICS_HOST, and the process's metrics port setting; 0 = off)"
    )


def serve_ops(host: str, port: int, **options: Any) -> OpsServer:
    """`bind_ops` and start serving in a daemon thread."""
    return bind_ops(host, port, **options).start()


def metrics_url(host: str, port: int) -> str:
    """Where a process listening on `host:port` serves `/metrics` (IPv6 in brackets)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
