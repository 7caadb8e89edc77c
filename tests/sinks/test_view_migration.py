"""Migration 0010 makes `replay_dead_letters_current` again in one statement.

It dropped the view and created it in two: a reader between them (a dashboard on a
server the sink migrates) was told the view does not exist. Migrations are recorded
by version, so a store that ran the old 0010 keeps its view: the view is the same
either way, checked here on a real embedded store (chDB).
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from chainwatch.settings import Settings
from sinks.clickhouse import migrate as migrations
from sinks.clickhouse.connection import SerializedClient, close_client, open_client, open_own_handle
from sinks.clickhouse.migrate import load_migrations, migrate

pytestmark = pytest.mark.integration

VIEW = "replay_dead_letters_current"

OLD_0010 = (
    "DROP VIEW IF EXISTS replay_dead_letters_current",
    "CREATE VIEW IF NOT EXISTS replay_dead_letters_current AS\n"
    "SELECT * EXCEPT (attempt) FROM replay_dead_letters\n"
    "WHERE (run_id, attempt) GLOBAL IN (SELECT run_id, attempt FROM replay_runs FINAL)",
)
"""Migration 0010's statements as it shipped first."""


def _store(data_dir: Path, database: str) -> Settings:
    return Settings(data_dir=data_dir, clickhouse={"database": database})  # type: ignore[arg-type]


def _view(client: SerializedClient, database: str) -> tuple[str, list[tuple[str, str]]]:
    """The view's definition (its database's name left out) and its columns in order."""
    (definition,) = client.query(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = {v:String}",
        parameters={"v": VIEW},
    ).result_rows[0]
    columns = client.query(
        "SELECT name, type FROM system.columns "
        "WHERE database = currentDatabase() AND table = {v:String} ORDER BY position",
        parameters={"v": VIEW},
    ).result_rows
    return str(definition).replace(f"{database}.", ""), [(str(n), str(t)) for n, t in columns]


def test_a_store_migrated_with_the_old_0010_and_a_fresh_one_have_the_same_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _store(tmp_path, "cw_old_0010")
    client = SerializedClient(open_client(old))
    try:
        every = load_migrations(old)
        monkeypatch.setattr(migrations, "load_migrations", lambda _s: every[:9])
        migrate(client, old)  # 0001 to 0009
        monkeypatch.undo()
        for statement in OLD_0010:  # ... and 0010 as the old migrate applied it
            client.command(statement)
        client.command(
            "INSERT INTO schema_migrations (version, name) VALUES (10, 'replay_dead_letters_view')"
        )
        assert migrate(client, old) == []  # recorded by version: not applied again
        migrated_before = _view(client, old.clickhouse.database)
    finally:
        client.close()

    fresh = _store(tmp_path, "cw_fresh")
    client = SerializedClient(open_client(fresh))
    try:
        assert [m.version for m in migrate(client, fresh)][-1] == 10
        migrated_now = _view(client, fresh.clickhouse.database)
    finally:
        client.close()

    assert migrated_now == migrated_before
    definition, columns = migrated_now
    assert definition.startswith(f"CREATE VIEW {VIEW}")
    names = [name for name, _ in columns]
    assert "attempt" not in names
    assert {"source_file", "source_line", "truncated", "original_sha256"} <= set(names)  # 0008's


def test_a_reader_of_the_view_never_misses_it_while_0010_runs_again(tmp_path: Path) -> None:
    """Each of 30 runs of 0010 would have dropped the view before creating it; the
    reader reads on a handle of its own throughout (one read before and one after)."""
    settings = _store(tmp_path, "cw_readers")
    client = SerializedClient(open_client(settings))
    reader = open_own_handle(settings)
    failures: list[str] = []
    reads = [0]
    read_once, stop = threading.Event(), threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                reader.query("SELECT count() FROM replay_dead_letters_current")
            except Exception as exc:  # what the reader was told is the finding
                failures.append(str(exc).splitlines()[0])
            reads[0] += 1
            read_once.set()

    try:
        migrate(client, settings)
        (statements,) = [m.statements for m in load_migrations(settings) if m.version == 10]
        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        assert read_once.wait(30)
        for _ in range(30):
            for statement in statements:
                client.command(statement)
        read_once.clear()
        assert read_once.wait(30)  # the reader was reading while the view was made again
        stop.set()
        thread.join(30)
    finally:
        stop.set()
        close_client(reader)
        client.close()
    assert not failures, f"{len(failures)} of {reads[0]} reads failed, e.g. {failures[0]}"


class _NoRenameat2:
    """A server whose disk lacks `renameat2` (EFS): it cannot swap a view in."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def command(self, sql: str, **_kwargs: Any) -> None:
        if sql.startswith("CREATE OR REPLACE VIEW"):
            raise DatabaseError(
                "Code: 1. DB::Exception: System call renameat2() is not supported. "
                "(UNSUPPORTED_METHOD)"
            )
        self.commands.append(sql)

    def query(self, _sql: str, **_kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(result_rows=[(version,) for version in range(1, 10)])


@pytest.mark.parametrize(
    ("cluster", "where"), [(None, ""), ("prod", " ON CLUSTER `prod`")], ids=["single", "cluster"]
)
def test_a_server_that_cannot_swap_a_view_in_gets_it_dropped_and_created(
    cluster: str | None, where: str
) -> None:
    """ClickHouse 24.10 and later replace a view with `renameat2`; on a disk without it
    the statement fails where the old 0010's two statements passed."""
    settings = Settings(
        clickhouse={"url": "http://ch:8123/cw", "cluster": cluster}  # type: ignore[arg-type]
    )
    server = _NoRenameat2()

    applied = migrate(server, settings)  # type: ignore[arg-type]

    assert [m.version for m in applied] == [10]
    _bookkeeping, drop, create, recorded = server.commands
    assert drop == f"DROP VIEW IF EXISTS {VIEW}{where}{' SYNC' if cluster else ''}"
    assert create.startswith(f"CREATE VIEW IF NOT EXISTS {VIEW}{where} AS\nSELECT * EXCEPT")
    assert recorded.startswith("INSERT INTO schema_migrations")


_MIGRATE_A_FRESH_STORE = """
import sys
from pathlib import Path
from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
settings = Settings(data_dir=Path(sys.argv[1]))
client = SerializedClient(open_client(settings))
try:
    print(max(m.version for m in migrate(client, settings)))
    print(client.query("SELECT count() FROM replay_dead_letters_current").result_rows[0][0])
finally:
    client.close()
"""

_UNAME26 = 0x0020000
"""Linux's personality flag that makes `uname` report a 2.6 kernel (`setarch --uname-2.6`)."""


def _as_an_old_kernel() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality(libc.personality(0xFFFFFFFF) | _UNAME26)


@pytest.mark.skipif(sys.platform != "linux", reason="a Linux personality flag")
def test_a_server_on_a_kernel_without_renameat2_gets_the_view_dropped_and_created(
    tmp_path: Path,
) -> None:
    """ClickHouse swaps a view in with `renameat2`, and refuses to on a kernel older
    than 3.15 (RHEL/CentOS 7's 3.10) with `NOT_IMPLEMENTED`, not `UNSUPPORTED_METHOD`
    (that one is a file system without it, EFS): 0010 failed there on every start,
    where its drop and create passed. The real embedded ClickHouse, in a process whose
    kernel says it is 2.6 (ClickHouse reads the version from `uname`)."""
    done = subprocess.run(
        [sys.executable, "-c", _MIGRATE_A_FRESH_STORE, str(tmp_path / "data")],
        preexec_fn=_as_an_old_kernel,  # in the child, before it runs Python
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["10", "0"]
