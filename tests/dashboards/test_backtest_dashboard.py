"""The "Plan backtest" dashboard and the backtest tables, on a fresh embedded chDB store.

Two runs are stored the way `chainwatch backtest` stores them; every panel's
SQL (macros expanded) runs on chDB and gives the figures of the pure
comparison (`chainwatch.backtest.compare`) over the same alerts. No broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chainwatch.backtest.compare import NO_ALERTS, AlertFacts, compare
from chainwatch.backtest.store import RunRecord, load_alerts, load_runs, store_run
from chainwatch.settings import Settings
from dashboards import backtest
from dashboards.export import build_all, queries
from dashboards.macros import QueryContext, expand
from dashboards.query import ClickHouseQuery
from schemas.alerts import Alert, alert_id
from schemas.plan import load_plan
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate

# the module fixture fills an embedded ClickHouse (chDB): no broker, but not a unit test
pytestmark = pytest.mark.integration

T0 = datetime(2027, 3, 1, tzinfo=UTC)
PLAN = load_plan(None)


def make_alert(
    type: str,
    order: str | None,
    *,
    status: str = "open",
    stage: str | None = None,
    visit: int | None = None,
    deadline_h: float = 0,
    detected_h: float | None = None,
    lateness_h: float | None = None,
    unit: str | None = None,
) -> Alert:
    deadline = T0 + timedelta(hours=deadline_h)
    severity = "critical" if type in ("stage_overdue", "order_overdue", "unit_down") else "warning"
    return Alert.model_validate(
        {
            "alert_id": alert_id(type, order or unit or "", stage, visit, deadline),
            "type": type,
            "severity": severity,
            "status": status,
            "order_id": order,
            "unit_id": unit,
            "stage": stage,
            "visit": visit,
            "deadline": deadline,
            "detected_at": T0 + timedelta(hours=deadline_h if detected_h is None else detected_h),
            "fulfilled_at": None if lateness_h is None else deadline + timedelta(hours=lateness_h),
            "lateness_s": None if lateness_h is None else lateness_h * 3600,
            "customer": None if order is None else {"customer_id": "C-1", "tier": "gold"},
            "details": {"note": "it's"},
        }
    )


def late(order: str, stage: str, lateness_h: float | None, visit: int = 1) -> Alert:
    return make_alert(
        "stage_overdue",
        order,
        status="open" if lateness_h is None else "resolved",
        stage=stage,
        visit=visit,
        deadline_h=24,
        lateness_h=lateness_h,
    )


CURRENT = [
    make_alert("order_overdue", "PO-1", deadline_h=300),
    make_alert("order_overdue", "PO-2", deadline_h=400),
    make_alert("order_at_risk", "PO-2", deadline_h=400, detected_h=380),
    late("PO-1", "dyeing", 4),
    late("PO-2", "dyeing", 1),
    late("PO-3", "knitting", None),
    make_alert("unit_down", None, unit="KNIT-1", stage="knitting", deadline_h=50),
]
PROPOSED = [
    make_alert("order_overdue", "PO-1", deadline_h=300),
    make_alert("order_at_risk", "PO-1", deadline_h=300, detected_h=200),
    make_alert("order_overdue", "PO-2", deadline_h=400),
    make_alert("order_at_risk", "PO-2", deadline_h=400, detected_h=350),
    make_alert("order_at_risk", "PO-4", deadline_h=500, detected_h=410),
    late("PO-1", "dyeing", 10),
    late("PO-2", "dyeing", 7),
    late("PO-5", "dyeing", 2),
    late("PO-1", "knitting", 3),
    make_alert("unit_down", None, unit="KNIT-1", stage="knitting", deadline_h=50),
]


def run_record(backtest_id: str, index: int, plan_name: str, alerts: list[Alert]) -> RunRecord:
    return RunRecord(
        run_id=f"{backtest_id}-{index}",
        backtest_id=backtest_id,
        name="march",
        plan_index=index,
        plan_name=plan_name,
        plan_sha256="a" * 64,
        plan_yaml="route: []\n",
        input_file="march.ndjson",
        input_sha256="b" * 64,
        until=None,
        input_records=10,
        published=9,
        dead_letters=1,
        alerts=len(alerts),
        started_at=T0,
        finished_at=T0 + timedelta(seconds=20),
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerializedClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("backtest") / "data")
    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
        # an older backtest, and an incomplete run (alerts, no run row): both ignored
        store_run(client, run_record("old", 0, "current", CURRENT[:2]), CURRENT[:2])
        client.insert(
            "backtest_alerts",
            [("half-run", "x", "order_overdue", "critical", "open", "PO-1")],
            column_names=["run_id", "alert_id", "type", "severity", "status", "order_id"],
        )
        store_run(client, run_record("bt", 0, "current", CURRENT), CURRENT)
        store_run(client, run_record("bt", 1, "proposed", PROPOSED), PROPOSED)
        yield client
    finally:
        client.close()


def the_board_queries() -> dict[str, ClickHouseQuery]:
    board = next(b for b in build_all(PLAN) if b.uid == backtest.UID)
    return dict(queries(board))


def run_panel(store: SerializedClient, title: str) -> list[dict[str, Any]]:
    query = the_board_queries()[title]
    ctx = QueryContext(T0, T0 + timedelta(days=30), 3600, {"backtest": ["bt"]})
    sql = expand(query.raw_sql, ctx)
    described = store.query(f"DESCRIBE TABLE ({sql})").result_rows
    assert tuple(r[0] for r in described) == query.columns, title
    result = store.query(sql)
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    assert rows, title
    return rows


def expected() -> Any:
    facts = [
        [AlertFacts.from_alert(a.model_dump()) for a in alerts] for alerts in (CURRENT, PROPOSED)
    ]
    return compare([("current", facts[0]), ("proposed", facts[1])], PLAN.route)


def hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def test_runs_and_alerts_round_trip(store: SerializedClient) -> None:
    runs = load_runs(store, "bt")
    assert [(r.plan_name, r.alerts, r.run_id) for r in runs] == [
        ("current", 7, "bt-0"),
        ("proposed", 10, "bt-1"),
    ]
    assert runs[0].started_at == T0
    stored = load_alerts(store, "bt-1")
    assert stored == sorted(
        (AlertFacts.from_alert(a.model_dump()) for a in PROPOSED), key=lambda f: f.alert_id
    )


def test_orders_panel_matches_the_pure_figures(store: SerializedClient) -> None:
    rows = run_panel(store, "Orders breached and warned, warning lead time (hours)")
    want = expected()
    assert [r["plan"] for r in rows] == ["current", "proposed"]
    for row, figures in zip(rows, want.plans, strict=True):
        assert row["orders_breached"] == figures.orders_breached
        assert row["orders_warned"] == figures.orders_warned
        assert row["breached_warned"] == figures.breached_warned
        assert row["lead_median_h"] == hours(figures.lead_median_s)
        assert row["lead_p10_h"] == hours(figures.lead_p10_s)
    # the figures themselves, by hand: proposed warned PO-1 100h and PO-2 50h ahead
    assert (want.plans[1].lead_median_s, want.plans[1].lead_p10_s) == (100 * 3600, 50 * 3600)


def test_alerts_panel_matches_the_pure_counts(store: SerializedClient) -> None:
    rows = run_panel(store, "Alerts by type and severity")
    got = {(r["plan"], r["alert"]): r["alerts"] for r in rows}
    want = {
        (figures.plan, f"{t} ({s})"): n
        for figures in expected().plans
        for t, s, n in figures.by_type_severity
    }
    assert got == want


def test_stage_lateness_panel_matches_the_pure_figures(store: SerializedClient) -> None:
    rows = run_panel(store, "Stage lateness (stage_overdue, hours)")
    got = [
        (r["stage"], r["plan"], r["late_visits"], r["still_open"], r["median_h"], r["p95_h"])
        for r in rows
    ]
    want = [
        (s.stage, figures.plan, s.late, s.still_open, hours(s.median_s), hours(s.p95_s))
        for figures in expected().plans
        for s in figures.stage_lateness
    ]
    route = list(PLAN.route)
    assert got == sorted(want, key=lambda w: (route.index(w[0]), w[1]))


def test_differing_outcomes_panel_matches_the_pure_list(store: SerializedClient) -> None:
    rows = run_panel(store, "Orders whose outcome differs between plans")
    got = [(r["order_id"], r["plan"], r["outcome"]) for r in rows]
    want = [
        (diff.order_id, plan, outcome)
        for diff in expected().differing
        for plan, outcome in zip(("current", "proposed"), diff.outcomes, strict=True)
    ]
    assert got == want
    assert ("PO-5", "current", NO_ALERTS) in got


def test_runs_panel_lists_the_chosen_backtest_only(store: SerializedClient) -> None:
    rows = run_panel(store, "Runs")
    assert [(r["plan_name"], r["run_id"]) for r in rows] == [
        ("current", "bt-0"),
        ("proposed", "bt-1"),
    ]


def test_the_variable_query_runs(store: SerializedClient, tmp_path: Path) -> None:
    del tmp_path
    query = backtest.backtest_variable().build().query
    assert isinstance(query, str)
    rows = store.query(query).result_rows
    assert {r[0] for r in rows} == {"old", "bt"}
    assert all("current" in r[1] for r in rows)
