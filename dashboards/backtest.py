"""Plan backtest: the stored runs of one `chainwatch backtest`, plan by plan.

The figures are those `chainwatch backtest` prints (`chainwatch.backtest.compare`
defines them; tests/dashboards/test_backtest_dashboard.py checks that this SQL
gives the same numbers on chDB). Only complete runs count: alerts are read
through their row in `backtest_runs`, which is written after them.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as models

from dashboards.base import new_dashboard, sql_list
from dashboards.panels import table_panel
from dashboards.query import DATASOURCE, sql
from schemas.plan import SlaPlan

UID = "cw-backtest"
THE_RUNS = "backtest_id IN (${backtest:sqlstring})"
RUN_IDS = f"(SELECT run_id FROM backtest_runs WHERE {THE_RUNS})"


def backtest_variable() -> dashboard.QueryVariable:
    """One backtest (the runs of one command), newest first, shown by name and start."""
    return (
        dashboard.QueryVariable("backtest")
        .label("Backtest")
        .datasource(DATASOURCE)
        .query(
            "SELECT backtest_id AS __value, "
            "concat(any(name), ' (', formatDateTime(min(started_at), '%Y-%m-%d %H:%i'), ' UTC, ', "
            "arrayStringConcat(arraySort(groupArray(plan_name)), ' vs '), ')') AS __text "
            "FROM backtest_runs GROUP BY backtest_id ORDER BY min(started_at) DESC"
        )
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
        .multi(False)
        .include_all(False)
    )


def _matrix(row: str, column: str, value: str) -> models.DataTransformerConfig:
    """Pivot (row, column, value) rows into one column per plan, as the CLI prints."""
    return models.DataTransformerConfig(
        id_val="groupingToMatrix",
        options={"rowField": row, "columnField": column, "valueField": value},
    )


def build(plan: SlaPlan) -> models.Dashboard:
    route = sql_list(plan.route)
    board = (
        new_dashboard(
            UID,
            "Chainwatch: plan backtest",
            "What each SLA plan would have raised on the same history (chainwatch backtest).",
            time_from="now-30d",
        )
        .with_variable(backtest_variable())
        .with_panel(
            table_panel(
                "Runs",
                sql(
                    f"""
                    SELECT plan_index, plan_name, substring(plan_sha256, 1, 12) AS plan_sha256,
                           input_file, substring(input_sha256, 1, 12) AS input_sha256,
                           until, input_records, published, dead_letters, alerts,
                           started_at, finished_at, run_id
                    FROM backtest_runs
                    WHERE {THE_RUNS}
                    ORDER BY plan_index
                    """,
                    "plan_index",
                    "plan_name",
                    "plan_sha256",
                    "input_file",
                    "input_sha256",
                    "until",
                    "input_records",
                    "published",
                    "dead_letters",
                    "alerts",
                    "started_at",
                    "finished_at",
                    "run_id",
                ),
                span=24,
                height=6,
                description="One replay of the history per plan; SHA-256 prefixes of the "
                "plan file and the history file.",
            )
        )
        .with_panel(
            table_panel(
                "Orders breached and warned, warning lead time (hours)",
                sql(
                    f"""
                    SELECT r.plan_index AS plan_index, r.plan_name AS plan,
                           countIf(o.breach IS NOT NULL) AS orders_breached,
                           countIf(o.warning IS NOT NULL) AS orders_warned,
                           countIf(o.breach IS NOT NULL AND o.warning IS NOT NULL)
                               AS breached_warned,
                           round(quantileExact(0.5)(o.lead_s) / 3600, 2) AS lead_median_h,
                           round(quantileExact(0.1)(o.lead_s) / 3600, 2) AS lead_p10_h
                    FROM backtest_runs AS r
                    LEFT JOIN (
                        SELECT run_id, order_id,
                               minIf(toNullable(deadline), type = 'order_overdue') AS breach,
                               minIf(toNullable(detected_at), type = 'order_at_risk')
                                   AS warning,
                               dateDiff('millisecond', warning, breach) / 1000 AS lead_s
                        FROM backtest_alerts
                        WHERE order_id IS NOT NULL AND run_id IN {RUN_IDS}
                        GROUP BY run_id, order_id
                    ) AS o ON o.run_id = r.run_id
                    WHERE r.{THE_RUNS}
                    GROUP BY r.plan_index, r.plan_name
                    ORDER BY r.plan_index
                    """,
                    "plan_index",
                    "plan",
                    "orders_breached",
                    "orders_warned",
                    "breached_warned",
                    "lead_median_h",
                    "lead_p10_h",
                ),
                span=24,
                height=6,
                description="Breached: an order_overdue alert. Warned: an order_at_risk. Lead "
                "time: the missed due date minus when the first order_at_risk fired, for "
                "breached orders that were warned (exact quantiles).",
            )
        )
        .with_panel(
            table_panel(
                "Alerts by type and severity",
                sql(
                    f"""
                    SELECT concat(a.type, ' (', a.severity, ')') AS alert, r.plan_name AS plan,
                           count() AS alerts
                    FROM backtest_alerts AS a
                    INNER JOIN backtest_runs AS r ON a.run_id = r.run_id
                    WHERE r.{THE_RUNS}
                    GROUP BY alert, r.plan_index, r.plan_name
                    ORDER BY alert, r.plan_index
                    """,
                    "alert",
                    "plan",
                    "alerts",
                ),
                span=12,
                height=9,
            ).with_transformation(_matrix("alert", "plan", "alerts"))
        )
        .with_panel(
            table_panel(
                "Stage lateness (stage_overdue, hours)",
                sql(
                    f"""
                    SELECT a.stage AS stage, r.plan_name AS plan,
                           countIf(a.status = 'resolved') AS late_visits,
                           countIf(a.status = 'open') AS still_open,
                           round(quantileExactIf(0.5)(a.lateness_s, a.status = 'resolved')
                               / 3600, 2) AS median_h,
                           round(quantileExactIf(0.95)(a.lateness_s, a.status = 'resolved')
                               / 3600, 2) AS p95_h
                    FROM backtest_alerts AS a
                    INNER JOIN backtest_runs AS r ON a.run_id = r.run_id
                    WHERE r.{THE_RUNS} AND a.type = 'stage_overdue' AND a.stage IS NOT NULL
                    GROUP BY a.stage, r.plan_index, r.plan_name
                    ORDER BY indexOf({route}, a.stage) = 0, indexOf({route}, a.stage),
                             a.stage, r.plan_index
                    """,
                    "stage",
                    "plan",
                    "late_visits",
                    "still_open",
                    "median_h",
                    "p95_h",
                ),
                span=12,
                height=9,
                description="Resolved stage_overdue alerts: how long after its budget a visit "
                "ended (median, p95); still_open: past budget and not ended when the run ended.",
            )
        )
        .with_panel(
            table_panel(
                "Orders whose outcome differs between plans",
                sql(
                    f"""
                    WITH
                        runs AS (
                            SELECT run_id, plan_index, plan_name
                            FROM backtest_runs WHERE {THE_RUNS}
                        ),
                        outcomes AS (
                            SELECT run_id, order_id,
                                   arrayStringConcat(arraySort(groupUniqArray(type)), ', ')
                                       AS outcome
                            FROM backtest_alerts
                            WHERE order_id IS NOT NULL AND run_id IN (SELECT run_id FROM runs)
                            GROUP BY run_id, order_id
                        ),
                        differing AS (
                            SELECT order_id FROM outcomes
                            GROUP BY order_id
                            HAVING uniqExact(outcome) > 1
                                OR count() < (SELECT count() FROM runs)
                        )
                    SELECT d.order_id AS order_id, r.plan_name AS plan,
                           if(empty(o.outcome), 'no alerts', o.outcome) AS outcome
                    FROM differing AS d
                    CROSS JOIN runs AS r
                    LEFT JOIN outcomes AS o ON o.order_id = d.order_id AND o.run_id = r.run_id
                    ORDER BY order_id, r.plan_index
                    """,
                    "order_id",
                    "plan",
                    "outcome",
                ),
                span=24,
                height=10,
                description="An order's outcome is the set of alert types it has under a plan.",
            ).with_transformation(_matrix("order_id", "plan", "outcome"))
        )
    )
    return board.build()
