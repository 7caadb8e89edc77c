"""What every Chainwatch dashboard shares: defaults, variables, SQL fragments."""

from __future__ import annotations

from collections.abc import Iterable

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as models

from dashboards.query import DATASOURCE

TAGS = ["chainwatch"]
OBLIGATION_TYPES = ("start_overdue", "stage_overdue", "handoff_overdue", "order_overdue")
OPEN_ORDER = "status IN ('on_track', 'at_risk', 'breached')"
TIER_FILTER = "$__conditionalAll(customer_tier IN (${tier:sqlstring}), $tier)"


def quote(value: str) -> str:
    """A ClickHouse string literal (stage names come from the plan, i.e. configuration)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


def new_dashboard(uid: str, title: str, description: str, *, time_from: str) -> dashboard.Dashboard:
    """Fixed uid, UTC, refreshing every 30 s; editable so operators can explore."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("utc")
        .time(time_from, "now")
        .refresh("30s")
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
    )


def tier_variable() -> dashboard.QueryVariable:
    """Customer tier filter; `All` expands `$__conditionalAll` to `1=1`."""
    return (
        dashboard.QueryVariable("tier")
        .label("Customer tier")
        .datasource(DATASOURCE)
        .query("SELECT DISTINCT customer_tier FROM orders_current ORDER BY customer_tier")
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
        .multi(True)
        .include_all(True)
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
    )
