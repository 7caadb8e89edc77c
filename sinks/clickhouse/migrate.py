"""Versioned, idempotent schema migrations.

Each `migrations/NNNN_name.sql` file is applied once, in order, and recorded
in `schema_migrations` (by version: a file edited after it was applied is not
applied again); statements use `IF NOT EXISTS`, or `CREATE OR REPLACE VIEW` for a
view made again, so a migration that failed half-way can simply run again.
`{ttl_days}` and `{database}` are filled in from the settings. With
`CHAINWATCH_CLICKHOUSE__CLUSTER` the same files are translated to a replicated,
sharded schema (`sinks/clickhouse/cluster.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clickhouse_connect.driver.exceptions import ClickHouseError

from sinks.clickhouse.cluster import fill, migration_statements, schema_migrations_ddl
from sinks.clickhouse.connection import SerializedClient, server_code
from sinks.clickhouse.settings import StoreConfig
from sinks.errors import SinkError

UNKNOWN_SETTING = 115
"""ClickHouse's code for a table setting it does not know: a server older than it."""

NEEDS_SERVER: dict[int, str] = {9: "24.8"}
"""The ClickHouse release a migration's table settings need (0009's
`deduplicate_merge_projection_mode`): an older server refuses its first statement with
`UNKNOWN_SETTING`, which `migrate` turns into one line naming both versions."""


UNSUPPORTED_METHOD = 1
"""ClickHouse's code for a system call the server's disk lacks: `CREATE OR REPLACE VIEW`
swaps the new view in with `renameat2` (ClickHouse 24.10 and later), which network file
systems such as EFS do not have."""

NOT_IMPLEMENTED = 48
"""... and its code when the kernel lacks it (older than 3.15: RHEL/CentOS 7's 3.10),
which ClickHouse checks before it tries (`RENAME EXCHANGE is not supported`)."""

CANNOT_SWAP = (UNSUPPORTED_METHOD, NOT_IMPLEMENTED)
"""What a server that cannot swap a view in refuses `CREATE OR REPLACE VIEW` with."""

_REPLACE_VIEW = re.compile(
    r"^CREATE OR REPLACE VIEW (?P<name>\w+)(?P<where>.*?) AS\b(?P<body>.*)$", re.S
)


class ServerTooOld(SinkError):
    """A migration needs a newer ClickHouse than the server's (retrying cannot help)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(settings: StoreConfig) -> list[Migration]:
    """The migrations with their statements for the configured layout, filled in.

    Single node: the files' statements as written. With `clickhouse.cluster`: the
    replicated/distributed statements `sinks.clickhouse.cluster` derives from them.
    """
    ch = settings.clickhouse
    return [
        Migration(
            source.version,
            source.name,
            tuple(fill(s, database=ch.database, ttl_days=ch.ttl_days) for s in statements),
        )
        for source, statements in migration_statements(ch.cluster)
    ]


def applied_versions(client: SerializedClient, settings: StoreConfig) -> set[int]:
    ch = settings.clickhouse
    client.command(fill(schema_migrations_ddl(ch.cluster), database=ch.database, ttl_days=0))
    rows = client.query("SELECT version FROM schema_migrations FINAL").result_rows
    return {int(row[0]) for row in rows}


def migrate(client: SerializedClient, settings: StoreConfig) -> list[Migration]:
    """Apply every pending migration; return the ones applied now."""
    done = applied_versions(client, settings)
    applied: list[Migration] = []
    for migration in load_migrations(settings):
        if migration.version in done:
            continue
        for statement in migration.statements:
            _apply(client, migration, statement)
        client.command(
            "INSERT INTO schema_migrations (version, name) VALUES ({v:UInt32}, {n:String})",
            parameters={"v": migration.version, "n": migration.name},
        )
        applied.append(migration)
    return applied


def _apply(client: SerializedClient, migration: Migration, statement: str) -> None:
    """One statement; a setting the server does not know, in a migration that needs a
    newer release (`NEEDS_SERVER`), is `ServerTooOld`, not ClickHouse's raw error."""
    try:
        client.command(statement)
    except ClickHouseError as exc:
        replaced = _REPLACE_VIEW.match(statement)
        if replaced is not None and server_code(exc) in CANNOT_SWAP:
            _drop_and_create(client, replaced)
            return
        needs = NEEDS_SERVER.get(migration.version)
        if needs is None or server_code(exc) != UNKNOWN_SETTING:
            raise
        raise ServerTooOld(
            f"migration {migration.version:04d}_{migration.name} needs ClickHouse {needs} "
            f"or later; this server is {_server_version(client)}"
        ) from exc


def _drop_and_create(client: SerializedClient, replaced: re.Match[str]) -> None:
    """A view replaced in two statements where the server cannot swap it in (no
    `renameat2` on its disk or in its kernel): readers may miss it between them, as they did before
    `CREATE OR REPLACE VIEW`, but the migration does not fail where it used to pass."""
    name, where = replaced["name"], replaced["where"]
    client.command(f"DROP VIEW IF EXISTS {name}{where}{' SYNC' if where else ''}")
    client.command(f"CREATE VIEW IF NOT EXISTS {name}{where} AS{replaced['body']}")


def _server_version(client: SerializedClient) -> str:
    try:
        return str(client.query("SELECT version()").result_rows[0][0])
    except ClickHouseError:  # the line above says enough without it
        return "older (its version could not be read)"
