"""Units: availability over time, cycle times, QC rejections and quantity loss per station."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as models

from dashboards.base import new_dashboard, quote
from dashboards.panels import state_timeline, table_panel
from dashboards.query import DATASOURCE, sql
from schemas.plan import SlaPlan

UID = "cw-units"
UNIT_FILTER = "$__conditionalAll(unit_id IN (${unit:sqlstring}), $unit)"


def unit_variable() -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable("unit")
        .label("Unit")
        .datasource(DATASOURCE)
        .query(
            "SELECT DISTINCT unit_id FROM scans_hourly "
            "UNION DISTINCT SELECT DISTINCT unit_id FROM unit_status ORDER BY unit_id"
        )
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
        .multi(True)
        .include_all(True)
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
    )


def build(plan: SlaPlan) -> models.Dashboard:
    qc = quote(plan.qc_stage)
    board = (
        new_dashboard(
            UID,
            "Chainwatch: units",
            "Station availability, cycle times, QC rejections and quantity loss.",
            time_from="now-7d",
        )
        .with_variable(unit_variable())
        .with_panel(
            state_timeline(
                "Unit status",
                sql(
                    f"""
                    SELECT event_time AS time, unit_id, status
                    FROM unit_status
                    WHERE $__timeFilter(event_time) AND {UNIT_FILTER}
                    ORDER BY unit_id, time
                    """,
                    "time",
                    "unit_id",
                    "status",
                ),
                "unit_id",
                ("up", "degraded", "down"),
            )
        )
        .with_panel(
            table_panel(
                "Cycle time per unit (visits ended in range)",
                sql(
                    f"""
                    SELECT stage, unit_id, count() AS visits,
                           round(quantile(0.5)(duration_s) / 3600, 2) AS p50_h,
                           round(quantile(0.9)(duration_s) / 3600, 2) AS p90_h,
                           round(100 * avg(on_time), 1) AS on_time_pct
                    FROM stage_visits_current
                    WHERE ended_at IS NOT NULL AND duration_s IS NOT NULL
                      AND $__timeFilter(ended_at) AND {UNIT_FILTER}
                    GROUP BY stage, unit_id
                    ORDER BY stage, unit_id
                    """,
                    "stage",
                    "unit_id",
                    "visits",
                    "p50_h",
                    "p90_h",
                    "on_time_pct",
                ),
                span=12,
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "QC rejection rate",
                sql(
                    f"""
                    SELECT unit_id,
                           uniqExactIf(event_id, action IN ('completed', 'rejected'))
                               AS inspected,
                           uniqExactIf(event_id, action = 'rejected') AS rejected,
                           round(100 * rejected / inspected, 1) AS rejection_pct
                    FROM scans
                    WHERE stage = {qc} AND $__timeFilter(event_time) AND {UNIT_FILTER}
                    GROUP BY unit_id
                    HAVING inspected > 0
                    ORDER BY rejection_pct DESC
                    """,
                    "unit_id",
                    "inspected",
                    "rejected",
                    "rejection_pct",
                ),
                span=12,
                height=5,
            )
        )
        .with_panel(
            table_panel(
                "Quantity loss",
                sql(
                    f"""
                    SELECT stage, unit_id, count() AS losses,
                           round(sum(JSONExtractFloat(details, 'previous_quantity')
                                     - JSONExtractFloat(details, 'quantity')), 1) AS lost,
                           JSONExtractString(details, 'uom') AS uom,
                           round(100 * max(1 - JSONExtractFloat(details, 'quantity')
                                 / JSONExtractFloat(details, 'previous_quantity')), 1)
                               AS worst_loss_pct
                    FROM alerts_current
                    WHERE type = 'quantity_loss' AND status != 'retracted'
                      AND $__timeFilter(detected_at) AND {UNIT_FILTER}
                    GROUP BY stage, unit_id, uom
                    ORDER BY lost DESC
                    """,
                    "stage",
                    "unit_id",
                    "losses",
                    "lost",
                    "uom",
                    "worst_loss_pct",
                ),
                span=12,
                height=5,
                description="From quantity_loss alerts: output below the previous visit's "
                "quantity beyond the plan's tolerance.",
            )
        )
    )
    return board.build()
