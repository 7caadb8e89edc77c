"""The one way Chainwatch opens ClickHouse.

Unset `CHAINWATCH_CLICKHOUSE__URL` means embedded chDB under the data dir,
through clickhouse-connect's chDB backend, so the same client code talks to a
ClickHouse server over HTTP when a URL is given. chDB allows one process per
data path: the process that opens it owns it, and serves read-only queries to
local tools through `sinks.clickhouse.query_server` (see `readers.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import httpx
from clickhouse_connect.driver import httputil
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from sinks.clickhouse.deadline_pool import Deadlines, bound, deadline_passed, deadlines_of
from sinks.clickhouse.settings import StoreConfig
from sinks.errors import SinkError
from sinks.http_deadline import DeadlineClient, failure_reason

CONNECT_DEADLINE_S = 10.0
"""How long a ClickHouse server may take to answer `/ping` before a client is opened,
connecting and the whole answer included, and then the client's opening, all its requests
(its version, time zone and settings). clickhouse-connect's own timeouts bound one socket
read (60 s each): a server that accepted and said nothing held a command a minute, one
that sent a byte at a time held it for ever. Every request of a server client has a
wall-clock deadline (`sinks.clickhouse.deadline_pool`), shared by the requests of one
call: these, then the three below."""

READ_DEADLINE_S = 40.0
"""One read of a reading client (`chainwatch sql`, `status`, `doctor`, dashboards'
reads through `open_reader`), every request of it (the statement's check, the read, a
clean-up after a failure) and the answers read in full: the server stops a read at
`max_execution_time` (30 s, `read_only.ReadLimits`), so this ends only a wait on a
server that stopped answering, or answers a byte at a time."""

WRITE_DEADLINE_S = 120.0
"""One insert (its column types asked first included) or query of a writing client (the
sink's batches of at most `flush_rows` rows, 50,000 by default, a second or two on a
healthy server; its reads of what is stored after an assignment). Past it the call fails
like an unreachable server: the sink pauses and retries the same batch under the same
de-duplication token."""

DDL_DEADLINE_S = 300.0
"""One statement sent with `command` (migrations, `CREATE DATABASE`): a schema change ON
CLUSTER waits for every replica, up to ClickHouse's `distributed_ddl_task_timeout` (180 s
by default)."""


class StoreUnavailable(SinkError):
    """ClickHouse cannot be opened or reached; the message says how to fix it."""


class StoreLocked(StoreUnavailable):
    """Another process owns the embedded chDB store."""


_SERVER_CODE = re.compile(r"\bCode: (\d+)\b")


def server_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of a server's (or chDB's) error, None for any other
    failure: callers match codes, never message text. The HTTP and the chDB clients both
    quote the server's `Code: N. DB::Exception: ...`."""
    if not isinstance(exc, ClickHouseError):
        return None
    match = _SERVER_CODE.search(str(exc))
    return int(match.group(1)) if match is not None else None


CLUSTER_SINK_SETTINGS: dict[str, str | int] = {
    # An insert into a Distributed table returns once every shard has its block
    # (not when the block is queued on the local disk), so a failed insert is
    # retried by the sink with the same token and never half-forwarded later.
    "insert_distributed_sync": 1,
    # ... and once a majority of each shard's replicas has it, one insert at a time
    # per table, so that ...
    "insert_quorum": "auto",
    "insert_quorum_parallel": 0,
    # ... the sink's reads of what is stored (skip-sets after a rebalance, Kafka
    # epochs) see every quorum insert, or fail and are retried: never a stale replica.
    "select_sequential_consistency": 1,
}
"""Session settings of the sink's client in cluster mode (docs/scaling.md, exactly-once)."""


def open_client(
    settings: StoreConfig,
    *,
    create_database: bool = True,
    writer: bool = True,
    deadlines: Deadlines | None = None,
) -> Client:
    """Connect to the configured store and select the Chainwatch database.

    In cluster mode a `writer` client (the sink, migrations) carries
    `CLUSTER_SINK_SETTINGS`; readers (dashboards, `chainwatch sql`) do not.
    Without `create_database` nothing is created - no embedded store, no
    database (a read path never writes): a store that is not there yet is a
    `StoreUnavailable` saying how to make one.

    A server client's calls each have a deadline for all their requests
    (`CONNECT_DEADLINE_S` while it opens, then `WRITE_DEADLINE_S` for a `writer`, else
    `READ_DEADLINE_S`; calls through `SerializedClient` or `answered` say so in a
    `StoreUnavailable`); give `deadlines` to abort them from another thread (`Deadlines.abort`).
    """
    database = settings.clickhouse.database
    if settings.clickhouse.is_embedded:
        path = settings.clickhouse_dir
        if not create_database and not embedded_store_exists(settings):
            raise StoreUnavailable(
                f"no embedded ClickHouse store at {path} yet; run `chainwatch db migrate` "
                "(or start `chainwatch sink`, which migrates first)"
            )
        path.mkdir(parents=True, exist_ok=True)
        if _held_by_another_process(path):
            raise StoreLocked(f"the embedded ClickHouse at {path} is held by {_holder(path)}")
        try:
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        except ClickHouseError as exc:
            if "Cannot lock file" in str(exc) or "already running" in str(exc):
                raise StoreLocked(
                    f"the embedded ClickHouse at {path} is held by {_holder(path)}"
                ) from exc
            raise StoreUnavailable(f"cannot open embedded ClickHouse at {path}: {exc}") from exc
    else:
        assert settings.clickhouse.url is not None
        parts = urlsplit(settings.clickhouse.url.get_secret_value())
        database = parts.path.strip("/") or database
        host = parts.hostname or "localhost"
        port = parts.port or (8443 if parts.scheme == "https" else 8123)
        if deadlines is None:
            deadlines = Deadlines(CONNECT_DEADLINE_S, str(settings.clickhouse.redacted_url()))
        probe_server(f"{parts.scheme}://{_url_host(host)}:{port}", settings, deadlines)
        pool = bound(_pool_manager(parts.scheme, host, port), deadlines)
        try:
            with deadlines.call(CONNECT_DEADLINE_S):
                client = clickhouse_connect.get_client(
                    host=host,
                    port=port,
                    username=unquote(parts.username or "default"),
                    password=unquote(parts.password or ""),
                    secure=parts.scheme == "https",
                    connect_timeout=5,
                    send_receive_timeout=60,
                    settings=CLUSTER_SINK_SETTINGS
                    if writer and settings.clickhouse.cluster is not None
                    else None,
                    pool_mgr=pool,
                )
        except (ClickHouseError, OSError) as exc:
            _close_pool(pool)
            raise StoreUnavailable(
                f"cannot reach ClickHouse at {settings.clickhouse.redacted_url()}: "
                f"{deadlines.cut or _first_line(exc)}; check CHAINWATCH_CLICKHOUSE__URL"
            ) from None
        deadlines.deadline_s = WRITE_DEADLINE_S if writer else READ_DEADLINE_S
    if create_database:
        on_cluster = (
            f" ON CLUSTER `{settings.clickhouse.cluster}`" if settings.clickhouse.cluster else ""
        )
        try:
            with answered(client, DDL_DEADLINE_S):
                client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`{on_cluster}")
        except BaseException:
            close_client(client)
            raise
    client.database = database
    return client


def _pool_manager(scheme: str, host: str, port: int) -> Any:
    """The urllib3 pool clickhouse-connect would make for the server (a proxy from the
    environment, as it finds one), for `deadline_pool.bound` to bound."""
    proxy = httputil.check_env_proxy(scheme, host, port)
    if scheme == "https":
        return httputil.get_pool_manager(https_proxy=proxy)
    return httputil.get_pool_manager(http_proxy=proxy)


def _close_pool(pool: Any) -> None:
    """Close a pool of ours: clickhouse-connect closes only those it made itself."""
    pool.clear()
    httputil.all_managers.pop(pool, None)


def close_client(client: Client) -> None:
    """`client.close()`, and its bounded pool with it (a server client's)."""
    try:
        client.close()
    finally:
        if deadlines_of(client) is not None:
            _close_pool(client.http)  # type: ignore[attr-defined]


@contextlib.contextmanager
def answered(client: object, seconds: float | None = None) -> Iterator[None]:
    """One call of a server client under its deadline (`seconds`, None: the client's):
    a request of it that was cut, or aborted, is a `StoreUnavailable` that says so,
    also when the call went on without its answer (a fallback): the server does not
    answer. So is a failed connection (`OperationalError`), instead of its traceback.
    For the embedded store (no requests) nothing changes."""
    deadlines = deadlines_of(client)
    if deadlines is None:
        yield
        return
    try:
        with deadlines.call(seconds):
            yield
    except Exception as exc:
        late = deadline_passed(exc)
        reason = deadlines.cut or (str(late) if late is not None else None)
        if reason is None and isinstance(exc, OperationalError):  # the connection failed
            reason = _first_line(exc)
        if reason is None:
            raise
    else:
        reason = deadlines.cut
        if reason is None:
            return
    raise StoreUnavailable(
        f"cannot reach ClickHouse at {deadlines.name}: {reason}; check CHAINWATCH_CLICKHOUSE__URL"
    )


def probe_server(base_url: str, settings: StoreConfig, deadlines: Deadlines | None = None) -> None:
    """`GET /ping` of the server within `CONNECT_DEADLINE_S` (any HTTP answer will do), or
    a `StoreUnavailable` naming the server (its URL redacted) and the setting to check.
    `deadlines.abort()` ends it too: the sink told to stop while a server trickled its
    `/ping` waited out all of `CONNECT_DEADLINE_S` (the opening's other requests were
    aborted already)."""
    try:
        with (
            DeadlineClient(deadline_s=CONNECT_DEADLINE_S, timeout=CONNECT_DEADLINE_S) as http,
            deadlines.aborting(http.abort) if deadlines is not None else contextlib.nullcontext(),
        ):
            http.get(f"{base_url}/ping")
    except httpx.HTTPError as exc:
        raise StoreUnavailable(
            f"cannot reach ClickHouse at {settings.clickhouse.redacted_url()}: "
            f"{failure_reason(exc, limit=160)}; check CHAINWATCH_CLICKHOUSE__URL"
        ) from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def embedded_store_exists(settings: StoreConfig) -> bool:
    """Whether the embedded store was made (by the sink or `chainwatch db migrate`)."""
    return (settings.clickhouse_dir / "metadata").is_dir()


def embedded_engine_version() -> str:
    """The embedded engine's version, asked of a throwaway store: a health check
    before the first run must not make the real one (a read path never writes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chainwatch-chdb-probe-") as tmp:
        try:
            client = clickhouse_connect.get_client(dsn=f"chdb://{tmp}")
            try:
                return str(client.command("SELECT version()"))
            finally:
                client.close()
        except ClickHouseError as exc:
            raise StoreUnavailable(f"the embedded ClickHouse does not start: {exc}") from exc


def open_own_handle(settings: StoreConfig) -> Client:
    """Another client on the embedded store this process already opened (`open_client`).

    chDB hosts one engine per process but any number of handles to it, each
    with its own session (settings, `USE`) and its own lock, and the engine runs
    their queries concurrently: the loopback query server reads through a handle
    of its own, so a slow read never waits on, or holds up, the sink's inserts.
    """
    if not settings.clickhouse.is_embedded:
        raise ValueError("a second handle exists only for the embedded store")
    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{settings.clickhouse_dir}")
    except ClickHouseError as exc:
        raise StoreUnavailable(
            f"cannot open a read handle on {settings.clickhouse_dir}: {_first_line(exc)}"
        ) from exc
    client.database = settings.clickhouse.database
    return client


def _held_by_another_process(path: Path) -> bool:
    """ClickHouse flocks `<path>/status` while it runs; probe it without waiting."""
    status = path / "status"
    if not status.exists():
        return False
    with status.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _holder(path: Path) -> str:
    """Which process holds the store, as ClickHouse wrote it in `status` ("PID: n"):
    the operator must stop that one, and it need not be a Chainwatch process."""
    try:
        text = (path / "status").read_text(errors="replace")
        match = re.search(r"^PID: (\d+)$", text, re.MULTILINE)
        if match is None:
            return "another process"
        pid = int(match.group(1))
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return "another process"
    command = " ".join(a.decode(errors="replace") for a in argv if a)
    if len(command) > 120:
        command = command[:117] + "..."
    return f"process {pid} ({command})" if command else f"process {pid}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SerializedClient:
    """A client shared by the threads of the owning process, one call at a time.

    chDB runs in-process and clickhouse-connect clients are not documented as
    thread-safe; the sink and the loopback query server share one engine.

    A server client's calls each end within their deadline (`open_client`): `query` and
    `insert` the client's, `command` (schema changes) `DDL_DEADLINE_S`; past it, a
    `StoreUnavailable` that says so. A query's rows are read in full within the call.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = threading.Lock()

    def query(self, sql: str, **kwargs: Any) -> Any:
        with self._lock, answered(self.client):
            result = self.client.query(sql, **kwargs)
            _ = result.result_rows  # the answer streams: read it under the deadline
            return result

    def command(self, sql: str, **kwargs: Any) -> Any:
        with self._lock, answered(self.client, DDL_DEADLINE_S):
            return self.client.command(sql, **kwargs)

    def insert(self, table: str, rows: Any, **kwargs: Any) -> Any:
        with self._lock, answered(self.client):
            return self.client.insert(table, rows, **kwargs)

    def close(self) -> None:
        with self._lock:
            close_client(self.client)
