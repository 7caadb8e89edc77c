"""The read-back of stored offsets at an assignment stays cheap on a large store, and a
read that is cut for taking too long says so and is retried, nothing buffered before."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from log_lines import Lines
from samples import scan_json
from sink_harness import wait_for
from sink_samples import record

from chainwatch.settings import Settings
from chainwatch.sink_runner import build_mappers
from sinks.clickhouse import metrics as sink_metrics
from sinks.clickhouse import migrate as migrate_module
from sinks.clickhouse import sink as sink_module
from sinks.clickhouse import stored_offsets
from sinks.clickhouse.connection import (
    SerializedClient,
    StoreUnavailable,
    open_client,
    server_code,
)
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.rows import ScanRows
from sinks.clickhouse.sink import ClickHouseSink, SinkConfig, StopRequested
from sinks.clickhouse.stored_offsets import (
    READ_BACK_SETTINGS,
    ReadBackMalformed,
    Stored,
    read_cut,
    read_stored,
)

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


MIGRATE_WITH_MERGES_STOPPED = """
import sys
from pathlib import Path
from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
settings = Settings(data_dir=Path(sys.argv[1]))
client = SerializedClient(open_client(settings))
client.command("SYSTEM STOP MERGES alerts")  # its mutations wait, however small the table
print([m.version for m in migrate(client, settings)])
print(client.query(
    "SELECT count() FROM system.mutations WHERE NOT is_done AND table = 'alerts'"
).result_rows[0][0])
client.close()
"""
"""Migrates a store in a process of its own, the `alerts` table's mutations held: a
migration that waited for them would never return, and the test ends that process."""


def test_migrate_returns_at_once_and_the_projection_is_built_for_existing_rows_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build is a background mutation: a migration (or the sink's start) that waited
    for it would block, unstoppable, for the rebuild of every table (chDB's sessions wait
    for mutations by default)."""
    client, settings = _open(tmp_path)
    try:
        _migrate_before_0009(client, settings, monkeypatch)
        _fill(client, "alerts")
    finally:
        client.close()
    migrated = subprocess.run(
        [sys.executable, "-c", MIGRATE_WITH_MERGES_STOPPED, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    # applied (with those after it), its alerts mutations pending: the lightweight
    # deletes' mask, the build
    applied, pending = migrated.stdout.splitlines()
    assert (json.loads(applied)[0], pending) == (9, "2")
    client, _ = _open(tmp_path)
    try:
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
        without = [
            table
            for table in _sink_tables(settings)
            if "PROJECTION kafka_positions"
            not in str(client.query(f"SHOW CREATE TABLE {table}").result_rows[0][0])
        ]
    finally:
        client.close()
    assert without == []


class _OldServer:
    """A ClickHouse 24.3 with migrations 1-8 applied: it knows no projection modes."""

    def command(self, sql: str, **kwargs: Any) -> None:
        if "_projection_mode" in sql:
            raise DatabaseError(
                "Code: 115. DB::Exception: Unknown setting 'deduplicate_merge_projection_mode'"
                ": for storage MergeTree. (UNKNOWN_SETTING)"
            )

    def query(self, sql: str, **kwargs: Any) -> _Result:
        if "version()" in sql:
            return _Result([("24.3.2.23",)])
        return _Result([(version,) for version in range(1, 9)])


def test_migrating_a_server_older_than_migration_0009_needs_says_so_in_one_line() -> None:
    """ClickHouse's UNKNOWN_SETTING out of `db migrate` (or the sink's start) said nothing
    of what to do."""
    with pytest.raises(migrate_module.ServerTooOld) as too_old:
        migrate(_OldServer(), Settings())  # type: ignore[arg-type]
    assert str(too_old.value) == (
        "migration 0009_kafka_positions needs ClickHouse 24.8 or later; this server is 24.3.2.23"
    )


def _sink_tables(settings: Settings) -> list[str]:
    return sorted({t.name for m in build_mappers(settings).values() for t in m.tables})


def test_a_lightweight_delete_is_refused_on_every_table_the_sink_writes(tmp_path: Path) -> None:
    """ClickHouse's lightweight delete leaves the deleted rows in the projection (issue
    #111791): the read-back would name their offsets as stored and the sink skip those
    records. A clean-up is an `ALTER TABLE ... DELETE` (below: it keeps the read-back
    right); a `DELETE FROM` fails, whatever the server's defaults."""
    client, settings = _open(tmp_path)
    try:
        migrate(client, settings)
        refused = []
        pinned = []
        for table in _sink_tables(settings):
            with pytest.raises(DatabaseError) as lightweight:
                client.command(f"DELETE FROM {table} WHERE kafka_offset < 0")  # noqa: S608
            refused.append(server_code(lightweight.value))
            created = str(client.query(f"SHOW CREATE TABLE {table}").result_rows[0][0])
            pinned.append("lightweight_mutation_projection_mode = 'throw'" in created)
    finally:
        client.close()
    assert set(refused) == {344}  # SUPPORT_IS_DISABLED: the table has projections
    assert all(pinned)  # 'throw' is chDB's default: pinned, a server's cannot differ


ALERT_VERSIONS = (
    "INSERT INTO alerts (alert_id, type, severity, status, order_id, detected_at, details,"
    " version, kafka_topic, kafka_partition, kafka_offset)"
    " SELECT toString(number % 300), 'order_overdue', 'warning', 'open', 'o',"
    " toDateTime64('2026-01-01', 3, 'UTC'), '{{}}', {first} + number, 'alerts', number % 4,"
    " intDiv({first} + number, 4) FROM numbers({count})"
)
"""Alerts 0-299, versions (and offsets) from `first` on: a later insert holds newer
versions of alerts an earlier one stored, which a replacing merge drops."""


def test_the_projection_and_a_full_scan_agree_on_mixed_parts_merges_and_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-back through the projection names the same offsets as a scan of the
    table: while old parts lack it, once it is built for rows some of which a lightweight
    delete before migration 0009 masked (a build from every row named them: ClickHouse
    #111791, and a merged old part may never merge again to drop them), after a
    replacing merge, after a delete."""
    client, settings = _open(tmp_path)

    def agree(partition: int, since: int) -> Stored:
        with monkeypatch.context() as patch:
            patch.setitem(READ_BACK_SETTINGS, "force_optimize_projection", 1)  # or it fails
            projected = read_stored(client, "alerts", "alerts", partition, since)
        with monkeypatch.context() as patch:
            patch.setitem(READ_BACK_SETTINGS, "optimize_use_projections", 0)
            scanned = read_stored(client, "alerts", "alerts", partition, since)
        assert projected == scanned, (partition, since)
        return projected

    def check() -> dict[tuple[int, int], Stored]:
        return {(p, since): agree(p, since) for p in range(4) for since in (0, 100)}

    try:
        _migrate_before_0009(client, settings, monkeypatch)
        client.command(ALERT_VERSIONS.format(first=0, count=600))  # a part without it
        # an operator's clean-up before 0009, to reload those records (offsets reset)
        client.command("DELETE FROM alerts WHERE kafka_partition = 2 AND kafka_offset >= 100")
        (migration,) = [m for m in migrate_module.load_migrations(settings) if m.version == 9]
        for statement in migration.statements:
            if "MATERIALIZE" not in statement:  # the old part stays without the projection
                client.command(statement)
        client.command(ALERT_VERSIONS.format(first=600, count=400))  # a part with it
        parts = client.query(
            "SELECT count(), countIf(has(projections, 'kafka_positions')) FROM system.parts"
            " WHERE table = 'alerts' AND active"
        ).result_rows[0]
        assert parts == (2, 1)
        before = check()
        # parts with different projections do not merge: the mutation comes first
        client.command(
            "ALTER TABLE alerts MATERIALIZE PROJECTION kafka_positions",
            settings={"mutations_sync": 1},
        )
        built = check()
        client.command("OPTIMIZE TABLE alerts FINAL", settings={"optimize_throw_if_noop": 1})
        merged = check()  # the older versions dropped, the projection rebuilt
        assert merged[0, 0].offsets < before[0, 0].offsets
        client.command(
            "ALTER TABLE alerts DELETE WHERE kafka_partition = 1 AND kafka_offset < 200",
            settings={"mutations_sync": 1},
        )
        deleted = check()
    finally:
        client.close()
    assert not {o for o in built[2, 0].offsets if 100 <= o < 150}  # deleted, not stored
    assert deleted[1, 0].offsets == {o for o in merged[1, 0].offsets if o >= 200} != set()


def test_a_read_the_server_stops_at_its_time_limit_is_a_cut_read(tmp_path: Path) -> None:
    """The error chDB (ClickHouse's code) gives when `max_execution_time` passes."""
    client, _ = _open(tmp_path)
    try:
        with pytest.raises(DatabaseError) as timed_out:
            client.query(
                "SELECT count() FROM numbers(1000000000000) WHERE number % 7 = 1",
                settings={"max_execution_time": 0.2},
            )
        with pytest.raises(DatabaseError) as refused:
            client.query("SELECT count() FROM no_such_table")
    finally:
        client.close()
    assert read_cut(timed_out.value)
    assert not read_cut(refused.value)


def test_a_read_back_past_its_limit_fails_though_a_server_profile_says_break(
    store: SerializedClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `timeout_overflow_mode = 'break'` (here the session's, as a server profile's)
    a query past its limit returns what it read by then: an aggregate of part of the table
    (fewer offsets than stored, their records stored again) or no row. The read-back pins
    `'throw'`: it fails as a cut read, retried."""
    store.command(FILL["scans"].format(partitions=1, start=0, count=200_000))
    store.command("SET timeout_overflow_mode = 'break'")
    monkeypatch.setattr(stored_offsets, "deadlines_of", lambda client: object())  # a server's
    monkeypatch.setattr(stored_offsets, "READ_BACK_MAX_EXECUTION_S", 0.000001)
    monkeypatch.setitem(READ_BACK_SETTINGS, "optimize_use_projections", 0)  # a slow read
    monkeypatch.setitem(READ_BACK_SETTINGS, "max_block_size", 1000)
    monkeypatch.setitem(READ_BACK_SETTINGS, "max_threads", 1)
    with pytest.raises(DatabaseError) as cut:
        read_stored(store, "scans", "scans", 0, 0)
    assert read_cut(cut.value)


def test_a_read_back_answered_without_its_row_says_so() -> None:
    """Not an IndexError: a read-back that cannot tell what is stored is retried, named."""
    with pytest.raises(ReadBackMalformed, match=r"scans holds of s\[3\] answered 0 rows"):
        read_stored(_Store([], rows=[]), "scans", "s", 3, 0)


def test_a_read_back_on_the_embedded_store_has_no_time_limit(
    store: SerializedClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chDB has no request deadline for a server limit to come first: a limit would only
    turn a slow read into one retried for ever (a server client's: test_clickhouse_deadlines)."""
    monkeypatch.setattr(stored_offsets, "READ_BACK_MAX_EXECUTION_S", 0.000001)
    assert read_stored(store, "scans", "scans", 0, 0).empty


# --- the sink's read-back, against a store that fails as told -------------------------


class _Store:
    """Answers the read-back with offsets 0 and 1 stored, after failing as told."""

    def __init__(
        self, failures: list[Exception], rows: list[tuple[Any, ...]] | None = None
    ) -> None:
        self.failures = failures
        self.rows = [(2, 1, [0, 1])] if rows is None else rows
        self.settings: list[dict[str, Any]] = []

    def query(self, sql: str, **kwargs: Any) -> Any:
        self.settings.append(kwargs.get("settings") or {})
        if self.failures:
            raise self.failures.pop(0)
        return _Result(self.rows)

    def insert(self, table: str, rows: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")


class _Result:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.result_rows = rows


SERVER_TIMEOUT = DatabaseError(
    "HTTPDriver for http://ch:8123 received ClickHouse error code 159\n"
    " Code: 159. DB::Exception: Timeout exceeded: elapsed 60.0 s, maximum: 60. (TIMEOUT_EXCEEDED)"
)
CLIENT_DEADLINE = StoreUnavailable(
    "cannot reach ClickHouse at http://ch:8123: no answer within 120 s; "
    "check CHAINWATCH_CLICKHOUSE__URL"
)


def _sink(store: _Store, *, backoff_s: float = 0.01) -> ClickHouseSink:
    return ClickHouseSink(
        bootstrap="unused:1",
        group_id="g",
        client=store,
        mappers={"s": ScanRows()},
        config=SinkConfig(initial_backoff_s=backoff_s, max_backoff_s=backoff_s),
    )


@pytest.mark.parametrize(
    ("failure", "event"),
    [
        (SERVER_TIMEOUT, "stored_offsets_read_slow"),
        (CLIENT_DEADLINE, "clickhouse_unavailable"),  # no answer at all: an outage
        (
            OperationalError("Error HTTPConnectionPool: Connection refused"),
            "clickhouse_unavailable",
        ),
        (
            StoreUnavailable("cannot reach ClickHouse at http://ch:8123: refused"),
            "clickhouse_unavailable",
        ),
        (ReadBackMalformed("answered 0 rows"), "stored_offsets_read_malformed"),
    ],
    ids=["server-time-limit", "client-deadline", "connection-refused", "unreachable", "malformed"],
)
def test_a_failed_read_back_is_named_for_what_it_was_and_retried_before_anything_is_buffered(
    failure: Exception, event: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = Lines()
    monkeypatch.setattr(sink_module, "log", lines)
    store = _Store([failure, failure])
    sink = _sink(store)
    tp = TopicPartition("s", 3)
    records = [record(scan_json(i), topic="s", partition=3, offset=i) for i in range(5)]

    asyncio.run(sink.handle(tp, records))

    assert [line["event"] for line in lines.lines] == [event, event]
    if event == "stored_offsets_read_slow":
        slow = lines.lines[0]
        assert (slow["table"], slow["topic"], slow["partition"]) == ("scans", "s", 3)
        assert "system.mutations has none of table scans left" in slow["fix"]
        assert (  # a build killed or failed for good: `db migrate` does not queue it again
            "ALTER TABLE scans MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0"
            in slow["fix"]
        )
    # offsets 0 and 1 were stored: known before the partition's first record was buffered
    assert sink.stats.skipped_already_stored == 2
    assert sink.buffered_rows == 3


def _sink_whose_read_back_is_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[ClickHouseSink, Lines]:
    """A sink whose store cuts every read-back (a server's timeout), and its log lines."""
    lines = Lines()
    monkeypatch.setattr(sink_module, "log", lines)
    return _sink(_Store([SERVER_TIMEOUT] * 100), backoff_s=60), lines


async def _waiting_to_read_back_again(
    sink: ClickHouseSink, lines: Lines
) -> tuple[asyncio.Event, asyncio.Task[Any]]:
    """The sink's stop event and a task handling one record, once its first read-back
    was cut and it waits (60 s) to read again."""
    stop = asyncio.Event()
    sink._stop = stop  # what `run` does with its stop event
    tp = TopicPartition("s", 0)
    reading = asyncio.create_task(sink.handle(tp, [record(scan_json(0), topic="s")]))
    await asyncio.to_thread(
        wait_for, lambda: lines.named("stored_offsets_read_slow"), 10, "a cut read"
    )
    return stop, reading


def test_the_paused_gauge_is_1_while_a_read_back_is_retried_and_0_once_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partition assigned while ClickHouse is down is read from nowhere until its
    read-back answers: ChainwatchSinkPaused (docs/observability.md) watches
    `chainwatch_sink_paused`, which stayed 0 meanwhile."""
    sink, lines = _sink_whose_read_back_is_cut(monkeypatch)

    async def scenario() -> None:
        stop, reading = await _waiting_to_read_back_again(sink, lines)
        assert sink_metrics.PAUSED._value.get() == 1
        stop.set()
        with pytest.raises(StopRequested):
            await asyncio.wait_for(reading, timeout=5)

    asyncio.run(scenario())
    answers = _sink(_Store([CLIENT_DEADLINE]))
    asyncio.run(answers.handle(TopicPartition("s", 1), [record(scan_json(0), topic="s")]))
    assert sink_metrics.PAUSED._value.get() == 0


def test_a_sink_told_to_stop_while_its_read_back_is_cut_stops_at_once_with_nothing_buffered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink, lines = _sink_whose_read_back_is_cut(monkeypatch)

    async def scenario() -> None:
        stop, reading = await _waiting_to_read_back_again(sink, lines)
        stop.set()
        with pytest.raises(StopRequested):
            await asyncio.wait_for(reading, timeout=5)

    asyncio.run(scenario())
    assert sink.buffered_rows == 0


def test_a_cancellation_in_the_turn_the_sink_is_told_to_stop_is_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.11's `asyncio.wait_for` returned when the stop event was set in the turn
    its task was cancelled, and dropped the cancellation (gh-86296): the task went on as
    if never cancelled, a Ctrl-C unseen. The wait is an `asyncio.timeout` now."""
    sink, lines = _sink_whose_read_back_is_cut(monkeypatch)

    async def scenario() -> None:
        stop, reading = await _waiting_to_read_back_again(sink, lines)
        stop.set()  # the waited-for event and the cancellation, in one turn
        reading.cancel()
        async with asyncio.timeout(5):
            await asyncio.wait({reading})
        assert reading.cancelled(), reading

    asyncio.run(scenario())
