"""Order drill-down: one order's visits against the plan, its alerts and its customer."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as models

from dashboards.base import new_dashboard
from dashboards.panels import ORDER_DASHBOARD_UID, bar_chart, table_panel, value_colors
from dashboards.query import DATASOURCE, sql
from schemas.plan import SlaPlan

UID = ORDER_DASHBOARD_UID
ORDER = "${order_id:sqlstring}"


def order_variable() -> dashboard.QueryVariable:
    """The most recently placed orders first; other links pass `var-order_id` directly."""
    return (
        dashboard.QueryVariable("order_id")
        .label("Order")
        .datasource(DATASOURCE)
        .query("SELECT order_id FROM orders_current ORDER BY placed_at DESC LIMIT 1000")
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
        .allow_custom_value(True)
    )


def build(plan: SlaPlan) -> models.Dashboard:
    del plan  # the visits carry their own budgets (stage_visits.budget_s)
    board = (
        new_dashboard(
            UID,
            "Chainwatch: order drill-down",
            "One order: its progress, every visit against the plan, its alerts, its customer.",
            time_from="now-30d",
        )
        .with_variable(order_variable())
        .with_panel(
            table_panel(
                "Order",
                sql(
                    f"""
                    SELECT o.order_id AS order_id, o.status AS status,
                           s.stage AS current_stage, s.visit AS current_visit,
                           o.product AS product, o.quantity AS quantity,
                           o.placed_at AS placed_at, o.due_at AS due_at, s.eta AS eta,
                           o.cancelled_at AS cancelled_at
                    FROM orders_current AS o
                    LEFT JOIN order_state_current AS s ON s.order_id = o.order_id
                    WHERE o.order_id = {ORDER}
                    """,
                    "order_id",
                    "status",
                    "current_stage",
                    "current_visit",
                    "product",
                    "quantity",
                    "placed_at",
                    "due_at",
                    "eta",
                    "cancelled_at",
                ),
                span=16,
                height=4,
            ).mappings([value_colors("on_track", "at_risk", "breached", "completed", "cancelled")])
        )
        .with_panel(
            table_panel(
                "Customer",
                sql(
                    f"""
                    SELECT o.customer_id AS customer_id,
                           coalesce(nullIf(c.name, ''), o.customer_name) AS name,
                           if(c.tier = '', o.customer_tier, c.tier) AS tier,
                           c.region AS region, c.account_manager AS account_manager
                    FROM orders_current AS o
                    LEFT JOIN customers_current AS c ON c.customer_id = o.customer_id
                    WHERE o.order_id = {ORDER}
                    """,
                    "customer_id",
                    "name",
                    "tier",
                    "region",
                    "account_manager",
                ),
                span=8,
                height=4,
                description="The CRM profile now; the name and tier the order was placed with "
                "if the customer has since been deleted.",
            )
        )
        .with_panel(
            bar_chart(
                "Visits: actual vs planned hours",
                sql(
                    f"""
                    SELECT concat(stage, ' #', toString(visit)) AS stage_visit,
                           round(ifNull(duration_s, dateDiff('second', started_at,
                               (SELECT max(as_of) FROM order_state_current
                                WHERE order_id = {ORDER}))) / 3600, 2) AS actual_h,
                           round(budget_s / 3600, 2) AS planned_h
                    FROM stage_visits_current
                    WHERE order_id = {ORDER}
                    ORDER BY ifNull(started_at, ended_at), visit
                    """,
                    "stage_visit",
                    "actual_h",
                    "planned_h",
                ),
                "stage_visit",
                span=24,
            ).unit("h")
        )
        .with_panel(
            table_panel(
                "Visit timeline",
                sql(
                    f"""
                    SELECT stage, visit, unit_id, started_at, ended_at,
                           round(duration_s / 3600, 2) AS duration_h,
                           round(budget_s / 3600, 2) AS budget_h,
                           on_time, outcome, quantity, uom
                    FROM stage_visits_current
                    WHERE order_id = {ORDER}
                    ORDER BY ifNull(started_at, ended_at), visit
                    """,
                    "stage",
                    "visit",
                    "unit_id",
                    "started_at",
                    "ended_at",
                    "duration_h",
                    "budget_h",
                    "on_time",
                    "outcome",
                    "quantity",
                    "uom",
                ),
                span=24,
            )
        )
        .with_panel(
            table_panel(
                "Alerts of this order",
                sql(
                    f"""
                    SELECT detected_at, type, severity, status, stage, visit, unit_id,
                           deadline, fulfilled_at, lateness_s, cause_unit_id, cause_reason
                    FROM alerts_current
                    WHERE order_id = {ORDER} AND status != 'retracted'
                    ORDER BY detected_at
                    """,
                    "detected_at",
                    "type",
                    "severity",
                    "status",
                    "stage",
                    "visit",
                    "unit_id",
                    "deadline",
                    "fulfilled_at",
                    "lateness_s",
                    "cause_unit_id",
                    "cause_reason",
                ),
                span=24,
            ).mappings([value_colors("open", "resolved", "critical", "warning")])
        )
    )
    return board.build()
