"""Chain overview: where the work is, how the SLAs hold, what is open right now."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as models

from dashboards.base import OPEN_ORDER, TIER_FILTER, new_dashboard, sql_list, tier_variable
from dashboards.panels import (
    bar_chart,
    order_links,
    percent_bars,
    stat_panel,
    table_panel,
    timeseries_panel,
    value_colors,
)
from dashboards.query import sql
from schemas.plan import SlaPlan

UID = "cw-overview"


def build(plan: SlaPlan) -> models.Dashboard:
    route = sql_list(plan.route)
    board = (
        new_dashboard(
            UID,
            "Chainwatch: chain overview",
            "Work in progress, SLA compliance, throughput, open alerts and unit disruptions.",
            time_from="now-7d",
        )
        .with_variable(tier_variable())
        .with_row(dashboard.Row("Orders"))
        .with_panel(
            stat_panel(
                "Open orders by status",
                sql(
                    f"""
                    SELECT countIf(status = 'on_track') AS on_track,
                           countIf(status = 'at_risk') AS at_risk,
                           countIf(status = 'breached') AS breached
                    FROM orders_current
                    WHERE {TIER_FILTER}
                    """,
                    "on_track",
                    "at_risk",
                    "breached",
                ),
                span=8,
                height=6,
            )
        )
        .with_panel(
            bar_chart(
                "Work in progress per stage",
                sql(
                    f"""
                    SELECT stage, countIf(status = 'on_track') AS on_track,
                           countIf(status = 'at_risk') AS at_risk,
                           countIf(status = 'breached') AS breached
                    FROM order_state_current
                    WHERE {OPEN_ORDER} AND stage IS NOT NULL AND {TIER_FILTER}
                    GROUP BY stage
                    ORDER BY indexOf({route}, stage)
                    """,
                    "stage",
                    "on_track",
                    "at_risk",
                    "breached",
                ),
                "stage",
                span=16,
                height=6,
            )
        )
        .with_row(dashboard.Row("SLA compliance"))
        .with_panel(
            percent_bars(
                "SLA compliance per stage (visits ended in range)",
                sql(
                    f"""
                    SELECT stage,
                           round(100 * sum(on_time_visits) / sum(completed_visits), 1)
                               AS compliance_pct
                    FROM stage_sla_hourly_view
                    WHERE $__timeFilter(hour) AND {TIER_FILTER}
                    GROUP BY stage
                    ORDER BY indexOf({route}, stage)
                    """,
                    "stage",
                    "compliance_pct",
                ),
            )
        )
        .with_panel(
            percent_bars(
                "SLA compliance per customer tier",
                sql(
                    f"""
                    SELECT customer_tier,
                           round(100 * sum(on_time_visits) / sum(completed_visits), 1)
                               AS compliance_pct
                    FROM stage_sla_hourly_view
                    WHERE $__timeFilter(hour) AND {TIER_FILTER}
                    GROUP BY customer_tier
                    ORDER BY customer_tier
                    """,
                    "customer_tier",
                    "compliance_pct",
                ),
            )
        )
        .with_panel(
            timeseries_panel(
                "Throughput: visits completed per stage per hour",
                sql(
                    """
                    SELECT $__timeInterval(hour) AS time, stage, sum(events) AS completed
                    FROM scans_hourly
                    WHERE $__timeFilter(hour) AND action = 'completed'
                    GROUP BY time, stage
                    ORDER BY time
                    """,
                    "time",
                    "stage",
                    "completed",
                    series=True,
                ),
                bars=True,
                span=24,
            )
        )
        .with_row(dashboard.Row("Now"))
        .with_panel(
            table_panel(
                "Open alerts",
                sql(
                    f"""
                    SELECT detected_at, severity, type, order_id, stage, visit, unit_id,
                           customer_name, customer_tier, deadline, cause_unit_id, cause_reason
                    FROM alerts_current
                    WHERE status = 'open' AND {TIER_FILTER}
                    ORDER BY severity = 'critical' DESC, detected_at DESC
                    LIMIT 500
                    """,
                    "detected_at",
                    "severity",
                    "type",
                    "order_id",
                    "stage",
                    "visit",
                    "unit_id",
                    "customer_name",
                    "customer_tier",
                    "deadline",
                    "cause_unit_id",
                    "cause_reason",
                ),
                span=24,
                height=10,
                description="Click an order id for its drill-down.",
            )
            .data_links(order_links())
            .mappings([value_colors("critical", "warning")])
        )
        .with_panel(
            table_panel(
                "Active unit disruptions",
                sql(
                    """
                    SELECT unit_id, argMax(stage, event_time) AS unit_stage,
                           argMax(status, event_time) AS current_status,
                           argMax(reason, event_time) AS current_reason,
                           max(event_time) AS since,
                           argMax(expected_up_at, event_time) AS expected_up_at
                    FROM unit_status
                    GROUP BY unit_id
                    HAVING current_status != 'up'
                    ORDER BY since
                    """,
                    "unit_id",
                    "unit_stage",
                    "current_status",
                    "current_reason",
                    "since",
                    "expected_up_at",
                    may_be_empty=True,
                ),
                span=24,
                height=6,
            ).mappings([value_colors("down", "degraded")])
        )
    )
    return board.build()
