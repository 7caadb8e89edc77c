"""A standard-library HTTP server served from a daemon thread that stops at once.

`serve_forever` looks for a stop every `poll_interval`, 0.5 s by default, and
`shutdown` waits for that look: every process's stop (its ops server), every stop
of the query server and every test teardown of a fake server waited up to half a
second. The ops, query and demo-receiver servers and the suite's fakes all take
their thread from here, so the interval is said once.
"""

from __future__ import annotations

import socketserver
import threading

STOP_POLL_S = 0.05
"""How often the serving thread looks for a stop (20 looks a second cost nothing measurable)."""


def serving_thread(server: socketserver.BaseServer, name: str | None = None) -> threading.Thread:
    """The daemon thread that serves `server` until its `shutdown()`; not started yet."""
    return threading.Thread(
        target=server.serve_forever, args=(STOP_POLL_S,), name=name, daemon=True
    )
