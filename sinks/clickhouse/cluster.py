"""The cluster schema, generated from the single-node migrations (one source).

`CHAINWATCH_CLICKHOUSE__CLUSTER=name` makes `chainwatch db migrate` apply, for
each `migrations/NNNN_name.sql`, the statements `cluster_statements` derives
from it:

* a `MergeTree`-family table `t` becomes `t_local`, a `Replicated*MergeTree`
  created `ON CLUSTER` under `/clickhouse/tables/{shard}/<database>/t_local`
  with the `{replica}` macro, plus a `Distributed` table named `t` over it, so
  dashboards, `chainwatch sql` and the sink keep the names they use today;
* `non_replicated_deduplication_window` becomes `replicated_deduplication_window`
  (insert de-duplication through Keeper, shared by the replicas of a shard);
* every `Distributed` table shards by a deterministic key (`SHARD_KEYS`): a
  retried batch splits into the same per-shard blocks, each de-duplicated by
  its token, and a `ReplacingMergeTree` keeps all versions of a key on one shard,
  so `FINAL` through the `Distributed` table collapses them correctly;
* views read the `Distributed` tables; materialized views read and write the
  local tables (each shard aggregates what it stores);
* `ALTER` goes to the local tables, and one that changes columns to the
  `Distributed` table too (its columns must match); `DROP` goes to both.

`schema_migrations` is one replicated table with a copy on every node.

`python -m sinks.clickhouse.cluster` writes both DDL sets, formatted by
ClickHouse's own parser (chDB's `formatQuery`), to `sinks/clickhouse/ddl/`;
`--check` fails when those golden files are not what the migrations generate.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

#: Distributed sharding key of each table: deterministic (never `rand()`), and the
#: `ReplacingMergeTree` sorting key's leading column for the latest-state tables.
SHARD_KEYS: dict[str, str] = {
    "scans": "cityHash64(order_id)",
    "order_events": "cityHash64(order_id)",
    "unit_status": "cityHash64(unit_id)",
    "customers": "cityHash64(customer_id)",
    "orders": "cityHash64(order_id)",
    "order_state": "cityHash64(order_id)",
    "stage_visits": "cityHash64(order_id)",
    "alerts": "cityHash64(alert_id)",
    "dead_letters": "cityHash64(dead_letter_id)",
    "webhook_deliveries": "cityHash64(webhook_id)",
    "scans_hourly": "cityHash64(stage, unit_id)",
    "stage_sla_hourly": "cityHash64(stage, unit_id)",
    "kafka_sources": "cityHash64(topic)",
    # a run's row and its alerts on one shard (the backtest readers join on run_id)
    "backtest_runs": "cityHash64(run_id)",
    "backtest_alerts": "cityHash64(run_id)",
    # a stored replay's run row and its rows on one shard (ReplacingMergeTree by run_id)
    "replay_runs": "cityHash64(run_id)",
    "replay_alerts": "cityHash64(run_id)",
    "replay_order_state": "cityHash64(run_id)",
    "replay_dead_letters": "cityHash64(run_id)",
}

LOCAL_SUFFIX = "_local"
DEDUP_WINDOW = 1000

_CREATE_TABLE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (?P<name>\w+) \((?P<columns>.*?)\)\s*"
    r"ENGINE = (?P<engine>\w*MergeTree)(?:\((?P<args>[^)]*)\))?(?P<rest>.*)$",
    re.DOTALL,
)
_CREATE_VIEW = re.compile(
    r"^CREATE (?P<how>VIEW IF NOT EXISTS|OR REPLACE VIEW) (?P<name>\w+) AS\b(?P<body>.*)$",
    re.DOTALL,
)
_CREATE_MV = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (?P<name>\w+) TO (?P<target>\w+) AS\b(?P<body>.*)$",
    re.DOTALL,
)
_ALTER = re.compile(r"^ALTER TABLE (?P<name>\w+)\s+(?P<rest>.*)$", re.DOTALL)
_COLUMN_CLAUSE = re.compile(r"\b(ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR) COLUMN\b")
_OTHER_CLAUSE = re.compile(
    r"\b(MODIFY (TTL|SETTING|ORDER BY|QUERY)|(ADD|DROP|MATERIALIZE) (INDEX|PROJECTION)|"
    r"REMOVE TTL|APPLY DELETED MASK|(DROP|DETACH|ATTACH) PARTITION|UPDATE|DELETE)\b"
)
_DROP = re.compile(r"^DROP (?P<kind>VIEW|TABLE) IF EXISTS (?P<name>\w+)$")
_FROM = re.compile(r"\b(FROM|JOIN)\s+(\w+)")

SCHEMA_MIGRATIONS_COLUMNS = (
    "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))"
)


class UnsupportedStatement(ValueError):
    """A migration statement the cluster generator has no rule for (add one)."""


@dataclass
class _Tables:
    """The MergeTree tables created so far (migrations are translated in order)."""

    names: set[str]


def schema_migrations_ddl(cluster: str | None) -> str:
    """The bookkeeping table: local, or replicated to every node of the cluster."""
    if cluster is None:
        return (
            f"CREATE TABLE IF NOT EXISTS schema_migrations {SCHEMA_MIGRATIONS_COLUMNS} "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
    # No {shard} in the path: one replication group spanning every node, so each
    # node holds the whole list and any node can answer what has been applied.
    return (
        f"CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER `{cluster}` "
        f"{SCHEMA_MIGRATIONS_COLUMNS} "
        "ENGINE = ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/all/{database}/schema_migrations', '{replica}') ORDER BY version"
    )


def _on_cluster(cluster: str) -> str:
    return f"ON CLUSTER `{cluster}`"


def _localize_sources(body: str, tables: _Tables) -> str:
    return _FROM.sub(
        lambda m: f"{m[1]} {m[2]}{LOCAL_SUFFIX}" if m[2] in tables.names else m[0], body
    )


def _table(match: re.Match[str], cluster: str, tables: _Tables) -> list[str]:
    name, engine, args = match["name"], match["engine"], match["args"]
    if name not in SHARD_KEYS:
        raise UnsupportedStatement(f"table {name} has no sharding key in SHARD_KEYS")
    local = f"{name}{LOCAL_SUFFIX}"
    path = f"'/clickhouse/tables/{{shard}}/{{database}}/{local}', '{{replica}}'"
    replicated_args = f"{path}, {args}" if args else path
    rest = match["rest"].replace(
        "non_replicated_deduplication_window", "replicated_deduplication_window"
    )
    tables.names.add(name)
    return [
        f"CREATE TABLE IF NOT EXISTS {local} {_on_cluster(cluster)} ({match['columns']})\n"
        f"ENGINE = Replicated{engine}({replicated_args}){rest}",
        f"CREATE TABLE IF NOT EXISTS {name} {_on_cluster(cluster)} AS {local}\n"
        f"ENGINE = Distributed('{cluster}', '{{database}}', '{local}', {SHARD_KEYS[name]})",
    ]


def cluster_statement(statement: str, cluster: str, tables: _Tables) -> list[str]:
    """The cluster statements for one single-node statement."""
    if match := _CREATE_TABLE.match(statement):
        return _table(match, cluster, tables)
    if match := _CREATE_MV.match(statement):
        target = match["target"]
        if target not in tables.names:
            raise UnsupportedStatement(f"materialized view {match['name']} into unknown {target}")
        body = _localize_sources(match["body"], tables)
        return [
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {match['name']} {_on_cluster(cluster)} "
            f"TO {target}{LOCAL_SUFFIX} AS{body}"
        ]
    if match := _CREATE_VIEW.match(statement):
        # Plain views read the Distributed tables (same names): nothing to rewrite.
        return [f"CREATE {match['how']} {match['name']} {_on_cluster(cluster)} AS{match['body']}"]
    if match := _ALTER.match(statement):
        name = match["name"]
        if name not in tables.names:
            raise UnsupportedStatement(f"ALTER of {name}, which is not a MergeTree table")
        local = f"ALTER TABLE {name}{LOCAL_SUFFIX} {_on_cluster(cluster)} {match['rest']}"
        if not _COLUMN_CLAUSE.search(match["rest"]):
            return [local]
        if _OTHER_CLAUSE.search(match["rest"]):
            raise UnsupportedStatement(
                f"ALTER of {name} mixes column changes with others: write two statements"
            )
        return [local, f"ALTER TABLE {name} {_on_cluster(cluster)} {match['rest']}"]
    if match := _DROP.match(statement):
        name = match["name"]
        if match["kind"] == "VIEW":
            return [f"DROP VIEW IF EXISTS {name} {_on_cluster(cluster)} SYNC"]
        tables.names.discard(name)
        return [
            f"DROP TABLE IF EXISTS {name} {_on_cluster(cluster)} SYNC",
            f"DROP TABLE IF EXISTS {name}{LOCAL_SUFFIX} {_on_cluster(cluster)} SYNC",
        ]
    raise UnsupportedStatement(f"no cluster rule for: {statement[:80]}")


@dataclass(frozen=True)
class MigrationSource:
    version: int
    name: str
    text: str  # the file as stored: `{ttl_days}` and `{database}` not filled in yet


_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migration_sources() -> list[MigrationSource]:
    found = []
    for entry in resources.files("sinks.clickhouse.migrations").iterdir():
        if match := _FILE.match(entry.name):
            found.append(MigrationSource(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {versions}")
    return found


def split_statements(sql: str) -> tuple[str, ...]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return tuple(stmt.strip() for stmt in body.split(";") if stmt.strip())


def migration_statements(cluster: str | None) -> list[tuple[MigrationSource, tuple[str, ...]]]:
    """Every migration with its statements for this layout (placeholders not filled in)."""
    tables = _Tables(set())
    out = []
    for source in migration_sources():
        statements = split_statements(source.text)
        if cluster is not None:
            statements = tuple(
                derived
                for statement in statements
                for derived in cluster_statement(statement, cluster, tables)
            )
        out.append((source, statements))
    return out


def fill(statement: str, *, database: str, ttl_days: int) -> str:
    """The placeholders of the migration files; `{shard}`/`{replica}` are server macros."""
    return statement.replace("{ttl_days}", str(ttl_days)).replace("{database}", database)


# --- golden files -------------------------------------------------------------

GOLDEN_DIR = Path(__file__).parent / "ddl"
GOLDEN_CLUSTER = "chainwatch"
GOLDEN_DATABASE = "chainwatch"
GOLDEN_TTL_DAYS = 400


def format_statements(statements: Iterable[str]) -> list[str]:
    """Each statement as ClickHouse's parser reads it back (chDB `formatQuery`).

    A statement ClickHouse cannot parse raises here: the golden files only ever
    hold SQL the server's own parser accepted. One query for all of them (chDB
    takes ~0.2 s a query on a loaded machine).
    """
    import json

    import chdb

    items = list(statements)
    if not items:
        return []
    # Parameters, not literals: `{shard}` inside a literal would be read as one.
    # Parameter values are read in TSV-escaped form.
    params = {
        f"q{i}": s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
        for i, s in enumerate(items)
    }
    select = ", ".join(f"formatQuery({{q{i}:String}})" for i in range(len(items)))
    result = chdb.query(  # type: ignore[no-untyped-call]
        f"SELECT [{select}] AS formatted", "JSONCompact", params=params
    )
    formatted: list[str] = json.loads(result.bytes())["data"][0][0]
    return formatted


def golden_files() -> dict[str, str]:
    """Relative path -> content of every golden file, freshly generated."""
    parts: list[tuple[str, str, list[str]]] = []  # (path, header, filled statements)
    for layout, cluster in (("single", None), ("cluster", GOLDEN_CLUSTER)):
        where = f"cluster `{GOLDEN_CLUSTER}`, " if cluster else ""
        header = (
            "-- GENERATED by `python -m sinks.clickhouse.cluster` from migrations/*.sql "
            f"({layout} layout, {where}database `{GOLDEN_DATABASE}`, ttl_days "
            f"{GOLDEN_TTL_DAYS}); formatted by ClickHouse's parser. Do not edit.\n"
        )
        bootstrap = fill(schema_migrations_ddl(cluster), database=GOLDEN_DATABASE, ttl_days=0)
        parts.append((f"{layout}/0000_schema_migrations.sql", header, [bootstrap]))
        for source, statements in migration_statements(cluster):
            filled = [
                fill(s, database=GOLDEN_DATABASE, ttl_days=GOLDEN_TTL_DAYS) for s in statements
            ]
            parts.append((f"{layout}/{source.version:04d}_{source.name}.sql", header, filled))
    formatted = iter(format_statements(s for _, _, statements in parts for s in statements))
    files: dict[str, str] = {}
    for rel, header, filled_statements in parts:
        body = "\n\n".join(f"{next(formatted)};" for _ in filled_statements)
        files[rel] = f"{header}\n{body}\n"
    return files


def check_golden(directory: Path = GOLDEN_DIR) -> list[str]:
    """The golden files that differ from what the migrations generate (empty: all good)."""
    wanted = golden_files()
    problems = []
    for rel, content in wanted.items():
        path = directory / rel
        if not path.exists():
            problems.append(f"{rel}: missing")
        elif path.read_text() != content:
            problems.append(f"{rel}: differs from the generated DDL")
    for layout in ("single", "cluster"):
        for path in sorted((directory / layout).glob("*.sql")):
            rel = f"{layout}/{path.name}"
            if rel not in wanted:
                problems.append(f"{rel}: not generated by any migration (stale)")
    return problems


def write_golden(directory: Path = GOLDEN_DIR) -> None:
    wanted = golden_files()
    for layout in ("single", "cluster"):
        folder = directory / layout
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.sql"):
            if f"{layout}/{stale.name}" not in wanted:
                stale.unlink()
    for rel, content in wanted.items():
        (directory / rel).write_text(content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="fail when the golden files are out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check_golden()
        for problem in problems:
            print(f"sinks/clickhouse/ddl/{problem}", file=sys.stderr)
        if problems:
            print("regenerate with: python -m sinks.clickhouse.cluster", file=sys.stderr)
            return 1
        print("cluster and single-node DDL golden files are up to date")
        return 0
    write_golden()
    print(f"wrote {GOLDEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
