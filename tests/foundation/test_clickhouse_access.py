"""Real ClickHouse (embedded chDB): migrations, and reads while another process owns the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dead_servers import DeadServer, outcome_within
from readable import line_within

from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, StoreLocked, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.query_server import endpoint_file
from sinks.http_serving import serving_thread

pytestmark = pytest.mark.integration

OWNER = """
import sys, time
from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client, open_own_handle
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.query_server import QueryServer
from sinks.clickhouse.read_only import ReadOnlyQueries
settings = Settings()
client = SerializedClient(open_client(settings))
migrate(client, settings)
client.command("CREATE TABLE IF NOT EXISTS marks (n UInt32) ENGINE = MergeTree ORDER BY n")
client.command("INSERT INTO marks SELECT number FROM numbers(42)")
server = QueryServer(ReadOnlyQueries(open_own_handle(settings)), settings.clickhouse_dir, 0).start()
print("ready", flush=True)
sys.stdin.readline()
server.stop()
client.close()
"""


def test_migrations_apply_once_and_are_recorded(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    client = SerializedClient(open_client(settings))
    try:
        first = migrate(client, settings)
        second = migrate(client, settings)
        tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    finally:
        client.close()
    assert first
    assert second == []
    assert {"schema_migrations", "scans"} <= tables


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Settings]:
    """Another process holding the embedded store and serving loopback reads."""
    settings = Settings(data_dir=tmp_path)
    with subprocess.Popen(  # its exit closes the pipes
        [sys.executable, "-c", OWNER],
        env={**os.environ, "CHAINWATCH_DATA_DIR": str(tmp_path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert line_within(proc.stdout, 60, "the store owner").strip() == "ready"
            yield settings
        finally:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(timeout=60)


def test_the_store_is_locked_to_its_owner_named_by_pid(owner: Settings) -> None:
    """It said "another Chainwatch process" whoever held it: the operator needs the pid."""
    with pytest.raises(StoreLocked, match=r"is held by process \d+ \(.*python.* -c "):
        open_client(owner)


def test_chainwatch_sql_answers_while_another_process_owns_the_store(owner: Settings) -> None:
    env = {**os.environ, "CHAINWATCH_DATA_DIR": str(owner.data_path)}
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "sql", "SELECT count() AS n FROM marks",
         "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"n": 42}


def test_the_loopback_endpoint_serves_reads_only(owner: Settings) -> None:
    env = {**os.environ, "CHAINWATCH_DATA_DIR": str(owner.data_path)}
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "sql", "DROP TABLE marks"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "read-only" in result.stderr
    info = json.loads(endpoint_file(owner.clickhouse_dir).read_text())
    assert oct(endpoint_file(owner.clickhouse_dir).stat().st_mode & 0o777) == "0o600"
    assert info["token"]


def test_after_the_owner_stops_sql_opens_the_store_itself(tmp_path: Path) -> None:
    env = {**os.environ, "CHAINWATCH_DATA_DIR": str(tmp_path)}
    subprocess.run(  # the owner made the store, then stopped
        [sys.executable, "-m", "chainwatch", "db", "migrate"],
        capture_output=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "sql", "SELECT 1 AS one", "--format", "csv"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert time.monotonic() < deadline
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["one", "1"]


def test_a_reader_of_a_server_creates_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """`chainwatch sql` / `status` against a server send reads only: no `CREATE DATABASE`
    (on a cluster it was a distributed DDL on every read, and refused for a readonly user)."""
    import clickhouse_connect

    from sinks.clickhouse import connection
    from sinks.clickhouse.readers import DirectReader

    sent: list[str] = []

    class Recorder:
        database: str | None = None

        def command(self, sql: str, *args: object, **kwargs: object) -> None:
            sent.append(sql)

        def query(self, sql: str, *args: object, **kwargs: object) -> None:
            sent.append(sql)
            raise ConnectionError("a recorder answers nothing")

        def set_client_setting(self, name: str, value: str) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(clickhouse_connect, "get_client", lambda **_: Recorder())
    monkeypatch.setattr(connection, "probe_server", lambda *_args: None)  # no server here
    settings = Settings(
        clickhouse={"url": "http://reader:pw@ch.example:8123/plant", "cluster": "prod"}  # type: ignore[arg-type]
    )
    reader = DirectReader(settings)
    reader.close()
    assert sent  # the reader did talk to the server
    assert not [s for s in sent if "CREATE" in s.upper()]


@pytest.mark.parametrize(
    "content",
    ["{}", "[]", '"x"', '{"port": "abc", "token": "t", "nonce": "n"}', '{"port": 0}', "{not json"],
)
def test_an_endpoint_file_that_is_not_what_the_server_writes_is_no_endpoint(
    tmp_path: Path, content: str
) -> None:
    from sinks.clickhouse.readers import loopback_reader

    settings = Settings(data_dir=tmp_path)
    path = endpoint_file(settings.clickhouse_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    assert loopback_reader(settings) is None


def test_the_token_goes_only_to_the_server_that_knows_the_nonce(tmp_path: Path) -> None:
    """A process that took the port after the owner stopped, and answers `/ping`, never
    gets the token or a statement."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from sinks.clickhouse.readers import loopback_reader

    seen: list[str] = []

    class Other(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"GET {self.path} {self.headers.get('X-Chainwatch-Token')}")
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            seen.append(f"POST {self.path}")
            self.send_response(500)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    serving_thread(other).start()
    try:
        settings = Settings(data_dir=tmp_path)
        path = endpoint_file(settings.clickhouse_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        port = other.server_address[1]
        path.write_text(json.dumps({"port": port, "token": "secret", "nonce": "abc"}))
        assert loopback_reader(settings) is None
    finally:
        other.shutdown()
        other.server_close()
    assert seen == ["GET /ping None"]


@pytest.fixture
def trickler() -> Iterator[DeadServer]:
    server = DeadServer("trickle")
    yield server
    server.close()


def test_a_port_taken_by_a_server_that_trickles_bytes_is_no_endpoint(
    tmp_path: Path, trickler: DeadServer
) -> None:
    """httpx's timeout bounds one read: a byte every 50 ms held `chainwatch sql`, `status`
    and `doctor` in the ping for ever. The ping has one deadline for all of it."""
    from sinks.clickhouse import readers

    settings = Settings(data_dir=tmp_path)
    path = endpoint_file(settings.clickhouse_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"port": trickler.port, "token": "secret", "nonce": "abc"}))
    started = time.monotonic()
    assert outcome_within(10, lambda: readers.loopback_reader(settings)) is None
    assert time.monotonic() - started < readers.PING_DEADLINE_S + 3


def test_a_read_through_an_owner_that_trickles_its_answer_ends_at_the_deadline(
    trickler: DeadServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sinks.clickhouse import readers
    from sinks.clickhouse.connection import StoreUnavailable

    monkeypatch.setattr(readers, "QUERY_DEADLINE_S", 1.0, raising=False)
    reader = readers.LoopbackReader(trickler.port, "secret", "abc")
    try:
        error = outcome_within(10, lambda: reader.query("SELECT 1"))
    finally:
        reader.close()
    assert isinstance(error, StoreUnavailable)
    assert str(error) == (
        f"the process owning the store stopped answering on 127.0.0.1:{trickler.port} "
        "(ReadTimeout: no answer within 1 s)"
    )


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("closed", "connection refused"),
        ("silent", "no answer within 1 s"),
        ("trickle", "no answer within 1 s"),
        ("garbage", "no valid HTTP answer"),
    ],
)
def test_a_clickhouse_url_that_does_not_answer_is_one_line_within_the_connect_deadline(
    kind: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """clickhouse-connect's timeouts bound one read (60 s): a server that said nothing held
    `sql`, `status`, `db migrate` and `doctor` a minute, one that sent a byte at a time for
    ever. Opening a client asks `/ping` first, under one deadline."""
    from chainwatch.cli_context import plain_store_error
    from sinks.clickhouse import connection
    from sinks.clickhouse.connection import StoreUnavailable

    monkeypatch.setattr(connection, "CONNECT_DEADLINE_S", 1.0, raising=False)
    server = DeadServer(kind)
    try:
        url = f"http://reader:s3cret@127.0.0.1:{server.port}/plant"
        settings = Settings(clickhouse={"url": url})  # type: ignore[arg-type]
        error = outcome_within(
            10, lambda: open_client(settings, create_database=False, writer=False)
        )
    finally:
        server.close()
    assert isinstance(error, StoreUnavailable)
    assert "s3cret" not in str(error)
    assert plain_store_error(str(error)) == (
        f"cannot reach ClickHouse at http://reader:***@127.0.0.1:{server.port}/plant "
        f"({reason}); check CHAINWATCH_CLICKHOUSE__URL"
    )
