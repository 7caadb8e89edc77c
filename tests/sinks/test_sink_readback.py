"""The read-back of stored offsets at an assignment stays cheap on a large store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sink_harness import wait_for

from chainwatch.settings import Settings
from chainwatch.sink_runner import build_mappers
from sinks.clickhouse import migrate as migrate_module
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.stored_offsets import READ_BACK_SETTINGS, read_stored

PARTITIONS = 100
PER_PARTITION = 2_000
ROWS = PARTITIONS * PER_PARTITION
"""200,000 rows, every partition's offsets spread over the whole table once merged."""

SMALL_FRACTION = ROWS // 10

# Rows as months of the sink's inserts leave them once merged: the table's own order
# (alerts by id, scans by stage and time) mixes every partition in every granule.
FILL = {
    "alerts": (
        "INSERT INTO alerts (alert_id, type, severity, status, order_id, detected_at, details,"
        " version, kafka_topic, kafka_partition, kafka_offset)"
        " SELECT toString(cityHash64(number)), 'order_overdue', 'warning', 'open', 'o',"
        " toDateTime64('2026-01-01', 3, 'UTC') + number, '{{}}', number, 'alerts',"
        " number % {partitions}, intDiv(number, {partitions}) FROM numbers({start}, {count})"
    ),
    "scans": (
        "INSERT INTO scans (event_id, order_id, stage, action, unit_id, event_time,"
        " kafka_topic, kafka_partition, kafka_offset)"
        " SELECT toString(number), toString(number % 997), ['cut', 'sew', 'pack'][number % 3 + 1],"
        " 'started', 'u1', toDateTime64('2026-01-01', 3, 'UTC') + number, 'scans',"
        " number % {partitions}, intDiv(number, {partitions}) FROM numbers({start}, {count})"
    ),
}


def _fill(client: SerializedClient, table: str) -> None:
    for start in range(0, ROWS, ROWS // 4):  # a few parts, merged into one below
        client.command(FILL[table].format(partitions=PARTITIONS, start=start, count=ROWS // 4))
    client.command(f"OPTIMIZE TABLE {table} FINAL")


def _open(path: Path) -> tuple[SerializedClient, Settings]:
    settings = Settings(data_dir=path)
    return SerializedClient(open_client(settings)), settings


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SerializedClient]:
    client, settings = _open(tmp_path)
    migrate(client, settings)
    try:
        yield client
    finally:
        client.close()


def _migrate_before_0009(
    client: SerializedClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store as the migrations before the read-back's projection left it."""
    earlier = migrate_module.migration_statements
    with monkeypatch.context() as patch:
        patch.setattr(
            migrate_module,
            "migration_statements",
            lambda cluster: [m for m in earlier(cluster) if m[0].version < 9],
        )
        assert [m.version for m in migrate(client, settings)] == list(range(1, 9))


def _reads_little(monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-back may read a tenth of the table (the server refuses it otherwise)."""
    monkeypatch.setitem(READ_BACK_SETTINGS, "max_rows_to_read", SMALL_FRACTION)


@pytest.mark.parametrize("table", ["alerts", "scans"])
def test_the_read_back_of_a_partition_reads_a_small_fraction_of_a_large_table(
    store: SerializedClient, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(store, table)
    _reads_little(monkeypatch)
    everything = read_stored(store, table, table, 37, 0)
    recent = read_stored(store, table, table, 37, PER_PARTITION - 10)
    assert everything.offsets == frozenset(range(PER_PARTITION))
    assert recent.offsets == frozenset(range(PER_PARTITION - 10, PER_PARTITION))


def test_migrate_gives_an_existing_stores_rows_the_cheap_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, settings = _open(tmp_path)
    try:
        _migrate_before_0009(client, settings, monkeypatch)
        _fill(client, "alerts")
        assert [m.version for m in migrate(client, settings)] == [9]
        wait_for(
            lambda: (
                not client.query(
                    "SELECT count() FROM system.mutations WHERE NOT is_done"
                ).result_rows[0][0]
            ),
            30,
            "the projection built for the rows stored before the migration",
        )
        _reads_little(monkeypatch)
        stored = read_stored(client, "alerts", "alerts", 5, PER_PARTITION - 3)
    finally:
        client.close()
    assert stored.offsets == frozenset(range(PER_PARTITION - 3, PER_PARTITION))


@pytest.mark.parametrize("made", ["fresh", "upgraded"])
def test_every_table_the_sink_writes_has_the_kafka_positions_projection(
    tmp_path: Path, made: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, settings = _open(tmp_path)
    try:
        if made == "upgraded":
            _migrate_before_0009(client, settings, monkeypatch)
        migrate(client, settings)
        tables = {t.name for m in build_mappers(settings).values() for t in m.tables}
        without = [
            table
            for table in sorted(tables)
            if "PROJECTION kafka_positions"
            not in str(client.query(f"SHOW CREATE TABLE {table}").result_rows[0][0])
        ]
    finally:
        client.close()
    assert without == []
