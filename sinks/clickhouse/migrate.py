"""Versioned, idempotent schema migrations.

Each `migrations/NNNN_name.sql` file is applied once, in order, and recorded
in `schema_migrations`; statements use `IF NOT EXISTS`, so a migration that
failed half-way can simply run again. `{ttl_days}` and `{database}` are filled
in from the settings. With `CHAINWATCH_CLICKHOUSE__CLUSTER` the same files are
translated to a replicated, sharded schema (`sinks/clickhouse/cluster.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sinks.clickhouse.cluster import fill, migration_statements, schema_migrations_ddl
from sinks.clickhouse.connection import SerializedClient
from sinks.clickhouse.settings import StoreConfig


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
            client.command(statement)
        client.command(
            "INSERT INTO schema_migrations (version, name) VALUES ({v:UInt32}, {n:String})",
            parameters={"v": migration.version, "n": migration.name},
        )
        applied.append(migration)
    return applied
