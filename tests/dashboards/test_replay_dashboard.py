"""The "Replay" dashboard on a fresh embedded chDB store, no broker.

Runs are stored the way `chainwatch replay --sink` stores them
(`chainwatch.replay_store.store_replay`): one run id twice (the second storing
replaces the first), another run, and a storing stopped before its run row.
Every panel's SQL (macros expanded) runs on chDB, returns the columns it
declares, and shows the chosen run's latest storing only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from chainwatch.replay_store import (
    ALERT_COLUMNS,
    ALERTS_TABLE,
    Outputs,
    StoredRun,
    output_rows,
    store_replay,
)
from chainwatch.settings import Settings
from dashboards import replay
from dashboards.export import build_all, queries
from dashboards.macros import QueryContext, expand
from dashboards.query import ClickHouseQuery
from schemas.alerts import Alert, alert_id
from schemas.dead_letter import DeadLetter, DeadLetterSource
from schemas.order_state import OrderState
from schemas.plan import load_plan
from schemas.validation import RecordRejected, decode_replay_line
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.rows_outputs import OrderStateRows

# the module fixture fills an embedded ClickHouse (chDB): no broker, but not a unit test
pytestmark = pytest.mark.integration

T0 = datetime(2027, 3, 1, tzinfo=UTC)
PLAN = load_plan(None)


def _record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=(),
    )


def _alert(order: str, status: str = "open") -> Alert:
    deadline = T0 + timedelta(hours=24)
    return Alert.model_validate(
        {
            "alert_id": alert_id("stage_overdue", order, "dyeing", 1, deadline),
            "type": "stage_overdue",
            "severity": "critical",
            "status": status,
            "order_id": order,
            "stage": "dyeing",
            "visit": 1,
            "deadline": deadline,
            "detected_at": deadline,
            "fulfilled_at": None if status == "open" else deadline + timedelta(hours=2),
            "lateness_s": None if status == "open" else 7200.0,
            "customer": {"customer_id": "C-1", "name": "Nordic Knits AB", "tier": "gold"},
        }
    )


def _state(order: str, stage: str) -> bytes:
    return (
        OrderState.model_validate(
            {
                "order_id": order,
                "customer": {"customer_id": "C-1", "name": "Nordic Knits AB", "tier": "gold"},
                "due_at": T0 + timedelta(days=20),
                "stage": stage,
                "visit": 1,
                "status": "on_track",
                "open_alert_ids": [],
                "visits": [],
                "version": 1,
                "as_of": T0,
            }
        )
        .model_dump_json()
        .encode()
    )


def _letter(line: bytes) -> bytes:
    with pytest.raises(RecordRejected) as rejected:
        decode_replay_line(line)
    exc = rejected.value
    source = DeadLetterSource(kind="replay", file="march.ndjson", line=1)
    return (
        DeadLetter.build(line, source, exc.errors, exc.reason_code, T0).model_dump_json().encode()
    )


def _outputs(orders: list[tuple[str, str]], letters: int) -> Outputs:
    states = [_record(_state(o, s), n) for n, (o, s) in enumerate(orders)]
    dead = [_record(_letter(b"{broken %d" % n), n) for n in range(letters)]
    return output_rows(states, dead, OrderStateRows(PLAN))


def _run(run_id: str, attempt: str, alerts: list[Alert], outputs: Outputs) -> StoredRun:
    return StoredRun(
        run_id=run_id,
        attempt=attempt,
        input_file="march.ndjson",
        input_sha256="b" * 64,
        plan_name="knitwear (shipped)",
        plan_sha256="a" * 64,
        until=T0 + timedelta(days=30),
        partitions=4,
        workers=1,
        input_records=10,
        published=9,
        dead_letters=len(outputs.dead_letters),
        alerts=len(alerts),
        orders=len(outputs.order_state),
        started_at=T0,
        finished_at=T0 + timedelta(seconds=20),
        stored_at=datetime.now(UTC),
    )


FIRST = [_alert("PO-1"), _alert("PO-2"), _alert("PO-3")]
SECOND = [_alert("PO-1", "resolved"), _alert("PO-2")]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerializedClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("replay") / "data")
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        first = _outputs([("PO-1", "dyeing"), ("PO-2", "knitting"), ("PO-3", "qc")], 3)
        store_replay(client, _run("march", "a1", FIRST, first), FIRST, first)
        second = _outputs([("PO-1", "knitting"), ("PO-2", "dyeing")], 1)
        store_replay(client, _run("march", "a2", SECOND, second), SECOND, second)
        store_replay(client, _run("other", "b1", FIRST, first), FIRST, first)
        # a storing of "march" stopped before its run row: never shown
        client.insert(
            ALERTS_TABLE,
            [("march", "a3", "x", "order_overdue", "critical", "open")],
            column_names=list(ALERT_COLUMNS[:6]),
        )
        yield client
    finally:
        client.close()


def run_panel(store: SerializedClient, title: str) -> list[dict[str, Any]]:
    board = next(b for b in build_all(PLAN) if b.uid == replay.UID)
    query: ClickHouseQuery = dict(queries(board))[title]
    ctx = QueryContext(T0, T0 + timedelta(days=30), 3600, {"run": ["march"]})
    sql = expand(query.raw_sql, ctx)
    described = store.query(f"DESCRIBE TABLE ({sql})").result_rows
    assert tuple(r[0] for r in described) == query.columns, title
    result = store.query(sql)
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    assert rows, title
    return rows


def test_the_run_panel_shows_the_latest_storing_once(store: SerializedClient) -> None:
    rows = run_panel(store, "Run")
    assert [(r["run_id"], r["alerts"], r["orders"], r["dead_letters"]) for r in rows] == [
        ("march", 2, 2, 1)
    ]


def test_alert_panels_count_the_latest_storing_only(store: SerializedClient) -> None:
    counts = run_panel(store, "Alerts by type, severity and status")
    assert [(r["type"], r["status"], r["alerts"]) for r in counts] == [
        ("stage_overdue", "open", 1),
        ("stage_overdue", "resolved", 1),
    ]
    listed = run_panel(store, "Alerts")
    assert sorted(r["alert_id"] for r in listed) == sorted(a.alert_id for a in SECOND)
    assert {r["lateness_h"] for r in listed} == {None, 2.0}


def test_orders_and_dead_letters_of_the_chosen_run(store: SerializedClient) -> None:
    orders = run_panel(store, "Orders at the end of the run")
    assert [(r["order_id"], r["stage"]) for r in orders] == [
        ("PO-2", "dyeing"),
        ("PO-1", "knitting"),
    ]  # along the route (dyeing before knitting), not by order id
    letters = run_panel(store, "Dead letters by reason")
    assert [(r["source_kind"], r["dead_letters"]) for r in letters] == [("replay", 1)]


def test_the_variable_lists_each_stored_run_once(store: SerializedClient) -> None:
    query = replay.run_variable().build().query
    assert isinstance(query, str)
    rows = store.query(query).result_rows
    assert sorted(r[0] for r in rows) == ["march", "other"]
    assert all("march.ndjson" in r[1] for r in rows)
