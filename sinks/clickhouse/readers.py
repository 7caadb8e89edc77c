"""Read access for local tools (`chainwatch sql`, `chainwatch status`).

A server URL: query it directly. Embedded chDB: if a running Chainwatch process
owns the store, ask its loopback query server; otherwise open the store
ourselves for the duration of the command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from sinks.clickhouse.connection import (
    StoreLocked,
    StoreUnavailable,
    answered,
    close_client,
    open_client,
)
from sinks.clickhouse.query_server import endpoint_file
from sinks.clickhouse.read_only import ReadFailed, ReadOnlyQueries, StatementRefused
from sinks.clickhouse.settings import StoreConfig
from sinks.http_deadline import DeadlineClient

PING_DEADLINE_S = 2.0
"""How long the owning process's `/ping` may take, all of it (connect, headers, body)."""
QUERY_DEADLINE_S = 60.0
"""How long one read through the owning process may take, all of it: the server stops a
statement at its own limits (`read_only`) well before, so this only ends a wait on a
process that stopped answering, or on whatever took its port and sends a byte at a time."""


@dataclass(frozen=True)
class Table:
    columns: list[str]
    types: list[str]
    rows: list[Sequence[Any]]


class StoreReader(Protocol):
    def query(self, sql: str) -> Table: ...
    def close(self) -> None: ...


class QueryFailed(StoreUnavailable):
    """ClickHouse rejected the statement."""


class DirectReader:
    """Opens the store itself; the same checks and limits as the loopback server.

    It creates nothing: a missing store or database is an error that says to migrate.
    A server that stops answering, or answers each request late, is a
    `StoreUnavailable` within `READ_DEADLINE_S` per read (`connection.answered`), not a
    hang.
    """

    def __init__(self, settings: StoreConfig) -> None:
        self._client = open_client(settings, writer=False, create_database=False)
        try:
            with answered(self._client):
                self._queries = ReadOnlyQueries(self._client)
        except BaseException:
            close_client(self._client)
            raise

    def query(self, sql: str) -> Table:
        with answered(self._client):
            try:
                result = self._queries.query(sql)
            except StatementRefused as exc:
                raise QueryFailed(f"refused: {exc}") from None
            except ReadFailed as exc:
                raise QueryFailed(str(exc)) from None
            return Table(
                list(result.column_names),
                [t.name for t in result.column_types],
                [list(r) for r in result.result_rows],
            )

    def close(self) -> None:
        close_client(self._client)


class LoopbackReader:
    def __init__(self, port: int, token: str, nonce: str) -> None:
        self._http = DeadlineClient(
            deadline_s=QUERY_DEADLINE_S,
            base_url=f"http://127.0.0.1:{port}",
            timeout=QUERY_DEADLINE_S,
            trust_env=False,  # loopback: never through a proxy
        )
        self._token = token
        self._nonce = nonce
        self._port = port

    def ping(self) -> bool:
        """Whether the owning process's query server answers there (its nonce, not just
        any server that took the port since)."""
        try:
            resp = self._http.get(
                "/ping", timeout=PING_DEADLINE_S, extensions={"deadline_s": PING_DEADLINE_S}
            )
            answer = resp.json()
        except (httpx.HTTPError, ValueError):
            return False
        return (
            resp.status_code == 200
            and isinstance(answer, dict)
            and answer.get("nonce") == self._nonce
        )

    def query(self, sql: str) -> Table:
        try:
            resp = self._http.post(
                "/query", json={"sql": sql}, headers={"X-Chainwatch-Token": self._token}
            )
        except httpx.HTTPError as exc:
            raise StoreUnavailable(
                f"the process owning the store stopped answering on 127.0.0.1:{self._port} "
                f"({type(exc).__name__}: {str(exc) or 'no detail'})"
            ) from None
        try:
            body = resp.json()
            if resp.status_code != 200:
                raise QueryFailed(str(body.get("error", resp.text)))
            return Table(body["columns"], body["types"], body["rows"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StoreUnavailable(
                f"the process owning the store answered {resp.status_code} with something "
                "that is not a query result"
            ) from None

    def close(self) -> None:
        self._http.close()


def loopback_reader(settings: StoreConfig) -> LoopbackReader | None:
    """The owning process's query server, from its endpoint file; None when there is no
    usable file (missing, unreadable, not what `QueryServer.start` writes) or no answer."""
    try:
        info = json.loads(endpoint_file(settings.clickhouse_dir).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(info, dict):
        return None
    port, token, nonce = info.get("port"), info.get("token"), info.get("nonce")
    if not (
        isinstance(port, int) and 0 < port < 65536 and isinstance(token, str)
        and isinstance(nonce, str)
    ):  # fmt: skip
        return None
    reader = LoopbackReader(port, token, nonce)
    if reader.ping():
        return reader
    reader.close()
    return None


def open_reader(settings: StoreConfig) -> StoreReader:
    """The cheapest reader that works for the configured store."""
    if not settings.clickhouse.is_embedded:
        return DirectReader(settings)
    loopback = loopback_reader(settings)
    if loopback is not None:
        return loopback
    try:
        return DirectReader(settings)
    except StoreLocked:
        raise StoreLocked(
            "the embedded ClickHouse is held by another process that serves no query endpoint; "
            "stop it or set CHAINWATCH_CLICKHOUSE__QUERY_PORT on it"
        ) from None
