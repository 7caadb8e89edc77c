"""Customers: who has late or at-risk orders, and on-time delivery over time."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from dashboards.base import TIER_FILTER, new_dashboard, tier_variable
from dashboards.panels import table_panel, timeseries_panel
from dashboards.query import sql
from schemas.plan import SlaPlan

UID = "cw-customers"

# An order is late when it is breached now, or an order_overdue alert was raised
# for its current due date (open, or resolved when it completed after it).
LATE = (
    "o.status = 'breached' OR o.order_id IN (SELECT order_id FROM alerts_current "
    "WHERE type = 'order_overdue' AND status != 'retracted')"
)


def build(plan: SlaPlan) -> models.Dashboard:
    del plan
    board = (
        new_dashboard(
            UID,
            "Chainwatch: customers",
            "Late and at-risk orders per customer; on-time delivery over time.",
            time_from="now-30d",
        )
        .with_variable(tier_variable())
        .with_panel(
            table_panel(
                "Late and at-risk orders per customer (orders placed in range)",
                sql(
                    f"""
                    SELECT o.customer_id AS customer_id, any(o.customer_name) AS customer,
                           any(o.customer_tier) AS tier, count() AS orders,
                           countIf({LATE}) AS late,
                           countIf(o.status = 'at_risk') AS at_risk,
                           countIf(o.status IN ('on_track', 'at_risk', 'breached')) AS open
                    FROM orders_current AS o
                    WHERE $__timeFilter(o.placed_at) AND {TIER_FILTER}
                    GROUP BY o.customer_id
                    ORDER BY late DESC, at_risk DESC, orders DESC
                    """,
                    "customer_id",
                    "customer",
                    "tier",
                    "orders",
                    "late",
                    "at_risk",
                    "open",
                ),
                span=24,
                height=10,
            )
        )
        .with_panel(
            timeseries_panel(
                "On-time delivery % per tier (orders completed)",
                sql(
                    f"""
                    SELECT $__timeInterval(delivered_at) AS time, customer_tier,
                           round(100 * countIf(delivered_at <= due_at) / count(), 1)
                               AS on_time_pct
                    FROM (
                        SELECT o.order_id AS order_id, o.customer_tier AS customer_tier,
                               o.due_at AS due_at, max(v.ended_at) AS delivered_at
                        FROM orders_current AS o
                        INNER JOIN stage_visits_current AS v ON v.order_id = o.order_id
                        WHERE o.status = 'completed' AND {TIER_FILTER}
                        GROUP BY o.order_id, o.customer_tier, o.due_at
                    )
                    WHERE $__timeFilter(delivered_at)
                    GROUP BY time, customer_tier
                    ORDER BY time
                    """,
                    "time",
                    "customer_tier",
                    "on_time_pct",
                    series=True,
                ),
                unit="percent",
                interval="1d",
                bars=True,
                span=24,
            )
            .min(0)
            .max(100)
        )
    )
    return board.build()
