"""The ClickHouse tables as the docs describe them are the tables the migrations create.

docs/sinks.md lists every column of the sink's tables, docs/backtest.md and
docs/replay.md say what the backtest and replay tables hold in terms of those,
and README.md lists the tables and views a user queries. Checked on a freshly
migrated embedded store (one chDB start, a few seconds), so a migration that adds
a column (0008 did) cannot leave the docs behind.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from child_env import environ_without_settings
from docs_helpers import ROOT

from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate

pytestmark = pytest.mark.integration

SINKS = (ROOT / "docs" / "sinks.md").read_text(encoding="utf-8")
BACKTEST = (ROOT / "docs" / "backtest.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: what every table the sink writes carries besides its documented columns
SINK_COMMON = {"kafka_topic", "kafka_partition", "kafka_offset", "ingested_at"}
INTERNAL = {"kafka_sources", "schema_migrations"}


@pytest.fixture(scope="module")
def columns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("store")))
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        rows = client.query(
            "SELECT table, name FROM system.columns WHERE database = currentDatabase()"
        ).result_rows
    finally:
        client.close()
    found: dict[str, set[str]] = {}
    for table, name in rows:
        found.setdefault(str(table), set()).add(str(name))
    return found


def _sinks_md_tables() -> dict[str, set[str]]:
    """`table` (or `table` / `view`) followed by a column table, in docs/sinks.md."""
    tables: dict[str, set[str]] = {}
    pattern = r"^`(\w+)`(?: / `\w+`)?(?: —| \(from)[^\n]*(?:\n[^\n|]+)*\n\n((?:\|.*\n)+)"
    for match in re.finditer(pattern, SINKS, re.M):
        names: set[str] = set()
        for row in match.group(2).splitlines()[2:]:
            names |= set(re.findall(r"`(\w+)`", row.split("|")[1]))
        tables[match.group(1)] = names
    return tables


def test_sinks_md_lists_every_column_of_the_sink_tables(columns: dict[str, set[str]]) -> None:
    documented = _sinks_md_tables()
    assert len(documented) >= 11, sorted(documented)  # the parser still finds the tables
    wrong = {}
    for table, names in documented.items():
        actual = columns.get(table, set()) - SINK_COMMON
        if names != actual:
            wrong[table] = {"not in the store": names - actual, "undocumented": actual - names}
    assert not wrong, f"docs/sinks.md's column tables differ from the migrations: {wrong}"


def test_every_table_the_sink_writes_has_its_kafka_coordinates(
    columns: dict[str, set[str]],
) -> None:
    raw_and_latest = [t for t in _sinks_md_tables() if "hourly" not in t]
    missing = {t: SINK_COMMON - columns[t] for t in raw_and_latest if SINK_COMMON - columns[t]}
    assert not missing


def test_backtest_and_replay_tables_are_what_their_docs_say(
    columns: dict[str, set[str]],
) -> None:
    listed = re.search(r"- `backtest_runs`, one row per plan: (.*?);\n", BACKTEST, re.S)
    assert listed is not None
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == columns["backtest_runs"]
    # backtest.md: run_id and alerts' columns without the Kafka coordinates, ingested_at, version
    assert columns["backtest_alerts"] == {"run_id"} | columns["alerts"] - SINK_COMMON - {"version"}
    # replay.md: run_id, the storing's attempt, and the columns of backtest_alerts /
    # order_state / dead_letters without the Kafka coordinates
    assert columns["replay_alerts"] == columns["backtest_alerts"] | {"attempt"}
    for table in ("order_state", "dead_letters"):
        assert columns[f"replay_{table}"] == columns[table] - SINK_COMMON | {"run_id", "attempt"}
    # replay.md: read the `*_current` views; each shows its table but the attempt (a view
    # made with `SELECT *` keeps the columns of its day: replay_dead_letters_current
    # lacked the scenario file and line 0008 added to its table)
    for table in ("replay_alerts", "replay_order_state", "replay_dead_letters"):
        assert columns[f"{table}_current"] == columns[table] - {"attempt"}, table


def test_the_readme_names_every_table_and_view_a_user_reads(
    columns: dict[str, set[str]],
) -> None:
    section = README.split("## Where the results go", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in re.findall(r"^\| (.*?) \| [^|]* \|$", section, re.M)[2:]:
        for name in re.findall(r"`([\w*]+)`", row):
            named |= (
                {name}
                if "*" not in name
                else {t for t in columns if re.fullmatch(name.replace("*", r"\w+"), t)}
            )
    assert named <= set(columns), f"README names tables that do not exist: {named - set(columns)}"
    assert set(columns) - INTERNAL <= named, (
        f"README's table list misses {sorted(set(columns) - INTERNAL - named)}"
    )


def test_the_documented_write_on_the_embedded_store_runs_as_written(tmp_path: Path) -> None:
    """docs/sinks.md's way to run an `ALTER` on the embedded store (`chainwatch sql`
    refuses it): its command, from a directory whose `.chainwatch` is the data dir,
    queues the mutation. (A relative path in the chDB DSN is read as a database.)"""
    section = SINKS[SINKS.index("**Running these statements**") :]
    found = re.search(r"```sh\n\s*(\.venv/bin/python -c [^\n]*)\n\s*```", section)
    assert found, "docs/sinks.md: the chDB command of 'Running these statements'"
    settings = Settings(data_dir=tmp_path / ".chainwatch")
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
    finally:
        client.close()
    command = found.group(1).replace(".venv/bin/python", shlex.quote(sys.executable), 1)
    ran = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    client = SerializedClient(open_client(settings))
    try:
        queued = client.query(
            "SELECT command FROM system.mutations WHERE database = currentDatabase() "
            "AND table = 'scans'"
        ).result_rows
    finally:
        client.close()
    assert any("DELETE WHERE" in str(row[0]) for row in queued), queued


def test_the_dead_letter_queries_run_as_written_and_find_a_request_s_items(
    tmp_path: Path,
) -> None:
    """docs/dead-letters.md's `chainwatch sql` lines on a store holding the dead letters of
    one gateway request: the day's counts, and each item with its bytes as sent."""
    doc = (ROOT / "docs" / "dead-letters.md").read_text(encoding="utf-8")
    queries = re.findall(r'^chainwatch sql "([^"]+)"$', doc, re.M)
    assert len(queries) == 2, "docs/dead-letters.md: the two queries of 'Looking at them'"
    settings = Settings(data_dir=tmp_path / "data")
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        client.command(
            "INSERT INTO dead_letters (dead_letter_id, source_kind, request_id, source_index, "
            "reason_code, reason, value_b64, failed_at) VALUES "
            "('a', 'http', 'dye01-batch-0042', 1, 'not_json', 'not_json: Invalid JSON', "
            "base64Encode('not json'), now64(3)), "
            "('b', 'http', 'dye01-batch-0042', 0, 'validation_failed', 'validation_failed: "
            'uom\', base64Encode(\'{"uom": "kgs"}\'), now64(3)), '
            "('c', 'kafka', '', 0, 'key_mismatch', 'key_mismatch: order_id', '', now64(3))"
        )
    finally:
        client.close()
    env = environ_without_settings()
    env["CHAINWATCH_DATA_DIR"] = str(settings.data_dir)
    outputs = []
    for query in queries:
        ran = subprocess.run(
            [sys.executable, "-m", "chainwatch", "sql", query, "--format", "csv"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-2000:]
        outputs.append(ran.stdout.splitlines())
    assert outputs[0][0] == "reason_code,source_kind,n"
    assert sorted(outputs[0][1:]) == [
        "key_mismatch,kafka,1",
        "not_json,http,1",
        "validation_failed,http,1",
    ]
    # the NDJSON lines of one request are told apart by `source_index`, as sinks.md says
    # (it said: the position in a multi-event HTTP body, EPCIS)
    row = next(line for line in SINKS.splitlines() if line.startswith("| `source_file`"))
    assert "NDJSON line" in row
    assert outputs[1] == [
        "source_index,reason,original",
        '0,validation_failed: uom,"{""uom"": ""kgs""}"',
        "1,not_json: Invalid JSON,not json",
    ]
