"""Versioned, idempotent schema migrations.

Each `migrations/NNNN_name.sql` file is applied once, in order, and recorded
in `schema_migrations`; statements use `IF NOT EXISTS`, so a migration that
failed half-way can simply run again. `{ttl_days}` and `{database}` are filled
in from the settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def _split(sql: str) -> tuple[str, ...]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return tuple(stmt.strip() for stmt in body.split(";") if stmt.strip())


def load_migrations(settings: Settings) -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("sinks.clickhouse.migrations").iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        sql = entry.read_text().replace("{ttl_days}", str(settings.clickhouse.ttl_days))
        sql = sql.replace("{database}", settings.clickhouse.database)
        found.append(Migration(int(match[1]), match[2], _split(sql)))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {versions}")
    return found


def applied_versions(client: SerializedClient) -> set[int]:
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    rows = client.query("SELECT version FROM schema_migrations FINAL").result_rows
    return {int(row[0]) for row in rows}


def migrate(client: SerializedClient, settings: Settings) -> list[Migration]:
    """Apply every pending migration; return the ones applied now."""
    done = applied_versions(client)
    applied: list[Migration] = []
    for migration in load_migrations(settings):
        if migration.version in done:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.command(
            "INSERT INTO schema_migrations (version, name) VALUES "
            f"({migration.version}, '{migration.name}')"
        )
        applied.append(migration)
    return applied
