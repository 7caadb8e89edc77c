"""Retention counts from arrival, and no timestamp wraps (issue 10, M2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from samples import scan_json
from sink_samples import record

from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.rows import ScanRows

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SerializedClient]:
    settings = Settings(data_dir=tmp_path, clickhouse={"ttl_days": 30})  # type: ignore[arg-type]
    client = SerializedClient(open_client(settings))
    migrate(client, settings)
    try:
        yield client
    finally:
        client.close()


def _store_scans(client: SerializedClient, times: list[datetime]) -> None:
    """Scans at `times`, written as the sink writes rows (times the contract refuses too)."""
    mapper = ScanRows()
    at = ScanRows.table.columns.index("event_time")
    rows = [
        (*row[:at], t, *row[at + 1 :])
        for i, t in enumerate(times)
        for row in mapper.rows(record(scan_json(i), offset=i))["scans"]
    ]
    client.insert("scans", rows, column_names=list(ScanRows.table.columns))


def test_events_dated_long_ago_are_kept_after_a_merge(store: SerializedClient) -> None:
    old, recent = datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC)
    _store_scans(store, [old, recent])
    store.command("OPTIMIZE TABLE scans FINAL")
    kept = store.query("SELECT event_time FROM scans ORDER BY event_time").result_rows
    assert [r[0].year for r in kept] == [2000, recent.year]


@pytest.mark.parametrize(
    "table", ["scans", "order_events", "unit_status", "dead_letters", "webhook_deliveries"]
)
def test_raw_tables_expire_by_arrival(store: SerializedClient, table: str) -> None:
    ttl = str(store.query(f"SHOW CREATE TABLE {table}").result_rows[0][0])
    assert "TTL toDateTime(ingested_at) + toIntervalDay(30)" in ttl


def test_times_outside_datetime_range_are_stored_exactly_and_never_wrap(
    store: SerializedClient,
) -> None:
    times = [datetime(1960, 5, 1, 12, tzinfo=UTC), datetime(2150, 1, 1, 8, tzinfo=UTC)]
    _store_scans(store, times)
    store.command("OPTIMIZE TABLE scans FINAL")
    stored = [r[0] for r in store.query("SELECT event_time FROM scans ORDER BY 1").result_rows]
    assert [t.replace(tzinfo=UTC) for t in stored] == times
    hours = store.query("SELECT count() FROM scans_hourly").result_rows
    assert hours == [(0,)]  # left out of the rollup, not wrapped into another century
