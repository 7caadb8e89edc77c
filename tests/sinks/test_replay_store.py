"""`chainwatch replay --sink`'s storage (`chainwatch.replay_store`) on chDB, without Kafka.

Exactly-once as seen by queries: a run id stored again replaces that run's
results in the `replay_*_current` views (never doubles them, even when the new
results are smaller), and a storing stopped before its run row is invisible.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sink_samples import make_alert, make_state, record

from chainwatch.replay_store import (
    RUNS_TABLE,
    Outputs,
    StoredRun,
    output_rows,
    store_replay,
    stored_counts,
)
from chainwatch.settings import Settings
from schemas.alerts import AlertStatus
from schemas.dead_letter import DeadLetter, DeadLetterSource
from schemas.validation import RecordRejected, decode_replay_line
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.rows_outputs import OrderStateRows

NOW = datetime(2027, 3, 31, tzinfo=UTC)


def _letter(line: bytes, number: int) -> bytes:
    try:
        decode_replay_line(line)
    except RecordRejected as exc:
        letter = DeadLetter.build(
            line,
            DeadLetterSource(kind="replay", file="s.ndjson", line=number),
            exc.errors,
            exc.reason_code,
            NOW,
        )
        return letter.model_dump_json().encode()
    raise AssertionError(f"{line!r} is a valid replay line")


def _outputs(orders: int, letters: int) -> Outputs:
    states = [record(make_state(n, 1).model_dump_json().encode(), offset=n) for n in range(orders)]
    dead = [record(_letter(b"{not json %d" % n, n), offset=n) for n in range(letters)]
    return output_rows(states, dead, OrderStateRows())


def _run(run_id: str, attempt: str, *, alerts: int, outputs: Outputs) -> StoredRun:
    return StoredRun(
        run_id=run_id,
        attempt=attempt,
        input_file="s.ndjson",
        input_sha256="0" * 64,
        plan_name="knitwear (shipped)",
        plan_sha256="1" * 64,
        until=NOW,
        partitions=4,
        workers=1,
        input_records=10,
        published=10,
        dead_letters=len(outputs.dead_letters),
        alerts=alerts,
        orders=len(outputs.order_state),
        started_at=NOW,
        finished_at=NOW,
        stored_at=datetime.now(UTC),
    )


def test_the_last_snapshot_of_each_order_and_each_dead_letter_once() -> None:
    snapshots = [
        record(make_state(1, 1).model_dump_json().encode(), offset=0),
        record(make_state(1, 3).model_dump_json().encode(), offset=1),
        record(make_state(2, 1).model_dump_json().encode(), offset=2),
        record(make_state(1, 2).model_dump_json().encode(), offset=3),  # older version, later
        record(b"not an order state", offset=4),
    ]
    twice = _letter(b"{broken", 7)
    letters = [record(twice, offset=0), record(twice, offset=1), record(_letter(b"[]", 8))]
    outputs = output_rows(snapshots, letters, OrderStateRows())
    assert [(row[0], row[9]) for row in outputs.order_state] == [("PO-1", 3), ("PO-2", 1)]
    assert len(outputs.dead_letters) == 2
    assert outputs.invalid == 1  # counted and skipped, never a crash


class StopsBeforeTheRunRow:
    """A store that fails when the run row is inserted (a replay killed half-way)."""

    def __init__(self, store: SerializedClient) -> None:
        self.store = store

    def insert(self, table: str, rows: Any, **kwargs: Any) -> Any:
        if table == RUNS_TABLE:
            raise ConnectionError("killed")
        return self.store.insert(table, rows, **kwargs)

    def query(self, sql: str, **kwargs: Any) -> Any:
        return self.store.query(sql, **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SerializedClient]:
    settings = Settings(data_dir=tmp_path / "data", log_level="warning")
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        yield client
    finally:
        client.close()


@pytest.mark.integration  # an embedded ClickHouse store (chDB)
@pytest.mark.slow
def test_a_run_id_stored_again_replaces_its_results_and_a_half_stored_run_is_invisible(
    store: SerializedClient,
) -> None:
    alerts = [make_alert(n) for n in range(3)]
    first = _outputs(orders=2, letters=2)
    store_replay(store, _run("nightly", "a1", alerts=3, outputs=first), alerts, first)
    assert stored_counts(store, "nightly") == {
        "runs": 1,
        "alerts": 3,
        "orders": 2,
        "dead_letters": 2,
    }

    second = _outputs(orders=1, letters=0)
    resolved = [make_alert(0, AlertStatus.RESOLVED)]
    store_replay(store, _run("nightly", "a2", alerts=1, outputs=second), resolved, second)
    expected = {"runs": 1, "alerts": 1, "orders": 1, "dead_letters": 0}
    assert stored_counts(store, "nightly") == expected
    rows = store.query(
        "SELECT alert_id, status, customer_tier FROM replay_alerts_current WHERE run_id = 'nightly'"
    ).result_rows
    assert rows == [(resolved[0].alert_id, "resolved", "platinum")]

    third = _outputs(orders=5, letters=5)
    with pytest.raises(ConnectionError):
        store_replay(
            StopsBeforeTheRunRow(store),
            _run("nightly", "a3", alerts=3, outputs=third),
            alerts,
            third,
        )
    assert stored_counts(store, "nightly") == expected  # the stopped attempt shows nothing
    assert store.query("SELECT count() FROM replay_alerts").result_rows == [(7,)]

    store_replay(store, _run("other", "b1", alerts=3, outputs=first), alerts, first)
    assert stored_counts(store, "other")["alerts"] == 3
    assert stored_counts(store, "nightly") == expected
