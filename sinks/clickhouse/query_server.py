"""Read-only queries against an embedded store owned by another process.

chDB locks its data path to one process. The process that owns it (sink,
demo) runs this small loopback HTTP endpoint so `chainwatch sql` and
`chainwatch status` still answer while it runs. Only 127.0.0.1, only callers
that present the per-start token written (mode 0600) next to the store, and
only one read statement per request, checked and limited by
`sinks.clickhouse.read_only` (ClickHouse's parser, a strict tokenizer,
`readonly = 1`, time/row/byte/memory limits): a refused statement gets a 403
with the reason, a statement ClickHouse rejects or stops gets a 400.

The server reads through a chDB handle of its own (`open_own_handle`), never
through the sink's client: a slow read does not hold up an insert, and a
failing statement cannot leave the sink's session in a broken state.

Anyone on the host may connect (the token comes with the request), so the server
is bounded as `sinks.http_serving` says: at most `MAX_CONNECTIONS` at once, each
request read within `REQUEST_DEADLINE_S`, no traceback when a caller hangs up.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hmac
import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

from sinks.clickhouse.read_only import ReadFailed, ReadOnlyQueries, StatementRefused
from sinks.http_serving import (
    MAX_CONNECTIONS,
    REQUEST_DEADLINE_S,
    BoundedHTTPServer,
    BoundedRequestHandler,
    serving_thread,
)

MAX_BODY = 1 << 20


def endpoint_file(store_dir: Path) -> Path:
    return store_dir.parent / "clickhouse.endpoint.json"


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)  # any other ClickHouse type (IPv4, Enum, ...) as its text


class QueryServer:
    """Serves `POST /query` for the lifetime of the owning process."""

    def __init__(
        self,
        queries: ReadOnlyQueries,
        store_dir: Path,
        port: int,
        max_connections: int = MAX_CONNECTIONS,
        request_deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        self.queries = queries
        self.store_dir = store_dir
        self.token = secrets.token_urlsafe(24)
        self.nonce = secrets.token_hex(8)
        """Answered by `/ping` and written beside the token: a reader sends the token and
        its statement only to the server that knows it, never to another process that
        took the port after this one stopped."""
        self._httpd = BoundedHTTPServer(
            ("127.0.0.1", port),
            self._handler(),
            max_connections=max_connections,
            request_deadline_s=request_deadline_s,
        )
        self._thread = serving_thread(self._httpd)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def _handler(self) -> type[BoundedRequestHandler]:
        server = self

        class Handler(BoundedRequestHandler):
            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, default=_json_default).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/ping":
                    self._reply(200, {"ok": True, "nonce": server.nonce})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:
                token = self.headers.get("X-Chainwatch-Token", "")
                if not hmac.compare_digest(token.encode(), server.token.encode()):
                    self._reply(401, {"error": "bad or missing token"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if self.path != "/query" or not 0 <= length <= MAX_BODY:
                    self._reply(400, {"error": "POST /query with a JSON body up to 1 MiB"})
                    return
                try:
                    sql = json.loads(self.rfile.read(length))["sql"]
                    if not isinstance(sql, str):
                        raise TypeError("sql")
                except (ValueError, KeyError, TypeError, RecursionError):
                    self._reply(400, {"error": 'body must be {"sql": "..."}'})
                    return
                try:
                    result = server.queries.query(sql)
                except StatementRefused as exc:
                    self._reply(403, {"error": f"refused: {exc}"})
                    return
                except ReadFailed as exc:
                    self._reply(400, {"error": str(exc)})
                    return
                except Exception as exc:  # answered, never a dropped connection
                    self._reply(500, {"error": f"{type(exc).__name__}: {exc}"[:2000]})
                    return
                self._reply(
                    200,
                    {
                        "columns": list(result.column_names),
                        "types": [t.name for t in result.column_types],
                        "rows": [list(r) for r in result.result_rows],
                    },
                )

        return Handler

    def start(self) -> QueryServer:
        self._thread.start()
        path = endpoint_file(self.store_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # a leftover may have any mode: the token is made 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"port": self.port, "token": self.token, "nonce": self.nonce}))
        tmp.replace(path)
        return self

    def stop(self) -> None:
        endpoint_file(self.store_dir).unlink(missing_ok=True)
        self._httpd.shutdown()
        self._httpd.server_close()
