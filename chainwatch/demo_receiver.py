"""A webhook receiver for the demo: verifies each delivery's signature and counts it.

It stands in for an ops pager so `make demo` shows alerts leaving the system
signed, the way a real receiver would check them (Standard Webhooks).
"""

from __future__ import annotations

import base64
import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from sinks.http_serving import serving_thread


class DemoReceiver:
    """Listens on a loopback port until `stop()`; `counts` holds what arrived."""

    def __init__(self) -> None:
        self.secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        self.counts: Counter[str] = Counter()
        self._verifier = Webhook(self.secret)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = serving_thread(self._httpd)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hooks/ops"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    receiver._verifier.verify(body, dict(self.headers.items()))
                    outcome = "verified"
                except WebhookVerificationError:
                    outcome = "bad signature"
                with receiver._lock:
                    receiver.counts[outcome] += 1
                self.send_response(204 if outcome == "verified" else 401)
                self.end_headers()

        return Handler

    def write_subscriptions(self, path: Path) -> Path:
        """Every critical alert of the demo to this receiver."""
        path.write_text(
            "endpoints:\n"
            "  - name: demo-ops-pager\n"
            f"    url: {self.url}\n"
            "    secret_env: CHAINWATCH_DEMO_WEBHOOK_SECRET\n"
            "    format: json\n"
            "    filters: {severities: [critical]}\n"
        )
        return path

    def start(self) -> DemoReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
