"""Shared panel shapes: one small function per visualisation, with the project's defaults.

Every panel reads the Chainwatch ClickHouse datasource (fixed uid) and is
placed by the dashboard builder's auto-layout from its `span` and `height`.
"""

from __future__ import annotations

from collections.abc import Mapping

from grafana_foundation_sdk.builders import (
    barchart,
    bargauge,
    common,
    dashboard,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

from dashboards.query import DATASOURCE, ClickHouseQueryBuilder

ORDER_DASHBOARD_UID = "cw-order"
ORDER_LINK = (
    f"/d/{ORDER_DASHBOARD_UID}/order-drill-down"
    "?var-order_id=${__data.fields.order_id}&${__url_time_range}"
)

STATUS_COLORS: Mapping[str, str] = {
    "on_track": "green",
    "at_risk": "orange",
    "breached": "red",
    "completed": "blue",
    "cancelled": "text",
    "up": "green",
    "degraded": "orange",
    "down": "red",
    "open": "red",
    "resolved": "green",
    "critical": "red",
    "warning": "orange",
}


def value_colors(*values: str) -> models.ValueMap:
    """Colour the status words the contract defines, the same on every dashboard."""
    return models.ValueMap(
        options={v: models.ValueMappingResult(color=STATUS_COLORS[v], text=v) for v in values}
    )


def order_links() -> list[cogbuilder.Builder[models.DashboardLink]]:
    """Any cell of a row opens the drill-down of that row's order (data link on the defaults).

    A data link on the defaults rather than a `byName` override: the vendored
    strict schema types matcher options and override values as objects.
    """
    return [
        dashboard.DashboardLink("Order drill-down")
        .type(models.DashboardLinkType.LINK)
        .url(ORDER_LINK)
        .tooltip("Open the order drill-down")
        .keep_time(True)
    ]


def stat_panel(
    title: str, query: ClickHouseQueryBuilder, *, span: int = 6, height: int = 5
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(query)
        .span(span)
        .height(height)
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
        .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME)
    )


def table_panel(
    title: str,
    query: ClickHouseQueryBuilder,
    *,
    span: int = 12,
    height: int = 8,
    description: str | None = None,
) -> table.Panel:
    panel = (
        table.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(query)
        .span(span)
        .height(height)
        .filterable(True)
    )
    if description:
        panel = panel.description(description)
    return panel


def timeseries_panel(
    title: str,
    query: ClickHouseQueryBuilder,
    *,
    unit: str = "short",
    interval: str = "1h",
    bars: bool = False,
    span: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(query)
        .span(span)
        .height(height)
        .unit(unit)
        .interval(interval)
    )
    if bars:
        panel = panel.draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(60)
    return panel


def bar_chart(
    title: str, query: ClickHouseQueryBuilder, x_field: str, *, span: int = 12, height: int = 8
) -> barchart.Panel:
    return (
        barchart.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(query)
        .span(span)
        .height(height)
        .x_field(x_field)
        .show_value(common_models.VisibilityMode.AUTO)
    )


def percent_bars(
    title: str, query: ClickHouseQueryBuilder, *, span: int = 12, height: int = 8
) -> bargauge.Panel:
    """One bar per row of a table result (e.g. compliance per stage), 0-100 %."""
    return (
        bargauge.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(query)
        .span(span)
        .height(height)
        .unit("percent")
        .min(0)
        .max(100)
        .reduce_options(common.ReduceDataOptions().values(True).calcs([]))
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .thresholds(
            dashboard.ThresholdsConfig()
            .mode(models.ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    models.Threshold(value=0, color="red"),
                    models.Threshold(value=90, color="orange"),
                    models.Threshold(value=97, color="green"),
                ]
            )
        )
    )


def state_timeline(
    title: str,
    query: ClickHouseQueryBuilder,
    partition_field: str,
    states: tuple[str, ...],
    *,
    span: int = 24,
    height: int = 9,
) -> statetimeline.Panel:
    """Rows of (time, entity, state) drawn as one lane per entity."""
    return (
        statetimeline.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(query)
        .span(span)
        .height(height)
        .mappings([value_colors(*states)])
        .with_transformation(
            models.DataTransformerConfig(
                id_val="partitionByValues",
                options={"fields": [partition_field], "keepFields": False},
            )
        )
    )
