"""`backtest_runs` and `backtest_alerts` (migration 0006): rows in, alerts back out.

The alerts of a run are inserted first and its run row last, so a run row means
"complete"; readers join on `backtest_runs` and never see a half-stored run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from chainwatch.backtest.compare import AlertFacts
from schemas.alerts import Alert
from sinks.clickhouse.mapping import compact_json
from sinks.clickhouse.rows_outputs import ALERT_FIELDS

RUNS_TABLE = "backtest_runs"
ALERTS_TABLE = "backtest_alerts"


class Store(Protocol):
    """What is used of a ClickHouse client (`sinks.clickhouse.connection.SerializedClient`)."""

    def insert(self, table: str, rows: Any, **kwargs: Any) -> Any: ...
    def query(self, sql: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class RunRecord:
    """One row of `backtest_runs`: one replay of the history under one plan."""

    run_id: str
    backtest_id: str
    name: str
    plan_index: int
    plan_name: str
    plan_sha256: str
    plan_yaml: str
    input_file: str
    input_sha256: str
    until: datetime | None
    input_records: int
    published: int
    dead_letters: int
    alerts: int
    started_at: datetime
    finished_at: datetime


RUN_COLUMNS = tuple(f.name for f in fields(RunRecord))
ALERT_COLUMNS = ("run_id", *ALERT_FIELDS)


def alert_row(run_id: str, alert: Alert) -> tuple[Any, ...]:
    """The `backtest_alerts` row of one alert: the columns of the sink's `alerts` table."""
    customer, cause = alert.customer, alert.cause
    return (
        run_id,
        alert.alert_id,
        alert.type.value,
        alert.severity.value,
        alert.status.value,
        alert.order_id,
        alert.unit_id,
        alert.stage,
        alert.visit,
        alert.deadline,
        alert.detected_at,
        alert.fulfilled_at,
        alert.lateness_s,
        None if customer is None else customer.customer_id,
        None if customer is None else customer.name,
        "standard" if customer is None else customer.tier,
        None if cause is None else cause.unit_id,
        None if cause is None else cause.reason,
        None if cause is None else cause.since,
        compact_json(alert.details),
    )


def store_run(store: Store, run: RunRecord, alerts: Sequence[Alert]) -> None:
    """The run's alerts, then its row (the row marks the run complete)."""
    if alerts:
        store.insert(
            ALERTS_TABLE,
            [alert_row(run.run_id, alert) for alert in alerts],
            column_names=list(ALERT_COLUMNS),
        )
    store.insert(RUNS_TABLE, [astuple(run)], column_names=list(RUN_COLUMNS))


def _utc(value: Any) -> Any:
    """clickhouse-connect returns naive datetimes for UTC columns; they are UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def load_runs(store: Store, backtest_id: str) -> list[RunRecord]:
    """The complete runs of one backtest, in the order of its plans."""
    result = store.query(
        f"SELECT {', '.join(RUN_COLUMNS)} FROM {RUNS_TABLE} "  # noqa: S608 - constants
        "WHERE backtest_id = {id:String} ORDER BY plan_index",
        parameters={"id": backtest_id},
    )
    return [RunRecord(*(_utc(v) for v in row)) for row in result.result_rows]


def load_alerts(store: Store, run_id: str) -> list[AlertFacts]:
    """The stored alerts of one run, as the comparison reads them, by alert_id."""
    result = store.query(
        "SELECT alert_id, type, severity, status, order_id, stage, deadline, detected_at, "  # noqa: S608 - constants
        f"lateness_s FROM {ALERTS_TABLE} WHERE run_id = {{run:String}} ORDER BY alert_id",
        parameters={"run": run_id},
    )
    return [AlertFacts(*(_utc(v) for v in row)) for row in result.result_rows]
