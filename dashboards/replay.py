"""Replay: one run stored by `chainwatch replay --sink` (docs/replay.md).

Every panel reads the `replay_*_current` views, which show only the latest
complete storing of a run id (migration 0007), so a run id stored twice is
never counted twice. tests/dashboards/test_replay_dashboard.py runs the SQL on
chDB against runs stored the way `--sink` stores them.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as models

from dashboards.base import new_dashboard, sql_list
from dashboards.panels import table_panel
from dashboards.query import DATASOURCE, sql
from schemas.plan import SlaPlan

UID = "cw-replay"
THE_RUN = "run_id = ${run:sqlstring}"


def run_variable() -> dashboard.QueryVariable:
    """One stored replay, newest first, shown by run id, scenario file and time stored."""
    return (
        dashboard.QueryVariable("run")
        .label("Replay run")
        .datasource(DATASOURCE)
        .query(
            "SELECT run_id AS __value, "
            "concat(run_id, ' (', input_file, ', ', "
            "formatDateTime(stored_at, '%Y-%m-%d %H:%i'), ' UTC)') AS __text "
            "FROM replay_runs_current ORDER BY stored_at DESC"
        )
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
        .multi(False)
        .include_all(False)
    )


def build(plan: SlaPlan) -> models.Dashboard:
    route = sql_list(plan.route)
    board = (
        new_dashboard(
            UID,
            "Chainwatch: replay",
            "The results of one `chainwatch replay --sink` run: alerts, orders, dead letters.",
            time_from="now-30d",
        )
        .with_variable(run_variable())
        .with_panel(
            table_panel(
                "Run",
                sql(
                    f"""
                    SELECT run_id, input_file, substring(input_sha256, 1, 12) AS input_sha256,
                           plan_name, substring(plan_sha256, 1, 12) AS plan_sha256, until,
                           partitions, workers, input_records, published, alerts, orders,
                           dead_letters, started_at, finished_at
                    FROM replay_runs_current
                    WHERE {THE_RUN}
                    """,
                    "run_id",
                    "input_file",
                    "input_sha256",
                    "plan_name",
                    "plan_sha256",
                    "until",
                    "partitions",
                    "workers",
                    "input_records",
                    "published",
                    "alerts",
                    "orders",
                    "dead_letters",
                    "started_at",
                    "finished_at",
                ),
                span=24,
                height=5,
                description="SHA-256 prefixes of the scenario file and of the plan the engine ran.",
            )
        )
        .with_panel(
            table_panel(
                "Alerts by type, severity and status",
                sql(
                    f"""
                    SELECT type, severity, status, count() AS alerts
                    FROM replay_alerts_current
                    WHERE {THE_RUN}
                    GROUP BY type, severity, status
                    ORDER BY type, severity, status
                    """,
                    "type",
                    "severity",
                    "status",
                    "alerts",
                    may_be_empty=True,
                ),
                span=12,
                height=8,
                description="The final state of each alert (retracted ones left out), as "
                "the replay printed them.",
            )
        )
        .with_panel(
            table_panel(
                "Dead letters by reason",
                sql(
                    f"""
                    SELECT reason_code, source_kind, count() AS dead_letters
                    FROM replay_dead_letters_current
                    WHERE {THE_RUN}
                    GROUP BY reason_code, source_kind
                    ORDER BY dead_letters DESC, reason_code, source_kind
                    """,
                    "reason_code",
                    "source_kind",
                    "dead_letters",
                    may_be_empty=True,
                ),
                span=12,
                height=8,
                description="source_kind 'replay': a scenario line that was not a record; "
                "otherwise what the engine rejected (docs/dead-letters.md).",
            )
        )
        .with_panel(
            table_panel(
                "Alerts",
                sql(
                    f"""
                    SELECT deadline, type, severity, status, order_id, unit_id, stage, visit,
                           detected_at, fulfilled_at, round(lateness_s / 3600, 2) AS lateness_h,
                           customer_name, customer_tier, alert_id
                    FROM replay_alerts_current
                    WHERE {THE_RUN}
                    ORDER BY deadline, alert_id
                    """,
                    "deadline",
                    "type",
                    "severity",
                    "status",
                    "order_id",
                    "unit_id",
                    "stage",
                    "visit",
                    "detected_at",
                    "fulfilled_at",
                    "lateness_h",
                    "customer_name",
                    "customer_tier",
                    "alert_id",
                    may_be_empty=True,
                ),
                span=24,
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "Orders at the end of the run",
                sql(
                    f"""
                    SELECT order_id, status, stage, visit, eta, due_at, customer_tier,
                           length(open_alert_ids) AS open_alerts, as_of
                    FROM replay_order_state_current
                    WHERE {THE_RUN}
                    ORDER BY indexOf({route}, stage) = 0, indexOf({route}, stage), order_id
                    """,
                    "order_id",
                    "status",
                    "stage",
                    "visit",
                    "eta",
                    "due_at",
                    "customer_tier",
                    "open_alerts",
                    "as_of",
                    may_be_empty=True,
                ),
                span=24,
                height=10,
                description="Each order's last snapshot from the engine, along the route.",
            )
        )
    )
    return board.build()
