"""Pipeline health: is data arriving, how fast, what is rejected, which webhooks fail."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from dashboards.base import new_dashboard
from dashboards.panels import stat_panel, table_panel, timeseries_panel
from dashboards.query import sql
from schemas.plan import SlaPlan

UID = "cw-pipeline"

# Every table the sink writes, by when the row was stored (ReplacingMergeTree
# tables may count fewer rows once merged: a rate, not an audit).
STORED = " UNION ALL ".join(
    f"SELECT ingested_at, kafka_topic FROM {table}"
    for table in (
        "scans",
        "order_events",
        "unit_status",
        "customers",
        "order_state",
        "alerts",
        "dead_letters",
        "webhook_deliveries",
    )
)


def build(plan: SlaPlan) -> models.Dashboard:
    del plan
    board = (
        new_dashboard(
            UID,
            "Chainwatch: pipeline health",
            "Ingest lag, event rates per topic, dead letters and webhook delivery failures.",
            time_from="now-6h",
        )
        .with_panel(
            stat_panel(
                "Ingest lag (now - newest event time), s",
                sql(
                    """
                    SELECT
                      (SELECT dateDiff('second', max(event_time), now64(3)) FROM scans)
                          AS scans,
                      (SELECT dateDiff('second', max(event_time), now64(3)) FROM unit_status)
                          AS unit_status,
                      (SELECT dateDiff('second', max(event_time), now64(3)) FROM order_events)
                          AS orders
                    """,
                    "scans",
                    "unit_status",
                    "orders",
                ),
                span=12,
            ).unit("s")
        )
        .with_panel(
            stat_panel(
                "Dead letters in range",
                sql(
                    "SELECT count() AS dead_letters FROM dead_letters "
                    "WHERE $__timeFilter(failed_at)",
                    "dead_letters",
                ),
                span=12,
            )
        )
        .with_panel(
            timeseries_panel(
                "Events stored per second, per topic",
                sql(
                    f"""
                    SELECT $__timeInterval(ingested_at) AS time, kafka_topic AS topic,
                           count() / $__interval_s AS events_per_s
                    FROM ({STORED})
                    WHERE $__timeFilter(ingested_at)
                    GROUP BY time, topic
                    ORDER BY time
                    """,
                    "time",
                    "topic",
                    "events_per_s",
                    series=True,
                ),
                unit="reqps",
                interval="1m",
                span=24,
            )
        )
        .with_panel(
            timeseries_panel(
                "Dead letters by reason",
                sql(
                    """
                    SELECT $__timeInterval(failed_at) AS time, reason_code,
                           count() AS dead_letters
                    FROM dead_letters
                    WHERE $__timeFilter(failed_at)
                    GROUP BY time, reason_code
                    ORDER BY time
                    """,
                    "time",
                    "reason_code",
                    "dead_letters",
                    series=True,
                ),
                interval="1m",
                bars=True,
            )
        )
        .with_panel(
            table_panel(
                "Dead letters by source and reason",
                sql(
                    """
                    SELECT ifNull(source_topic, source_kind) AS source, reason_code,
                           count() AS dead_letters, max(failed_at) AS latest,
                           any(reason) AS example
                    FROM dead_letters
                    WHERE $__timeFilter(failed_at)
                    GROUP BY source, reason_code
                    ORDER BY dead_letters DESC
                    """,
                    "source",
                    "reason_code",
                    "dead_letters",
                    "latest",
                    "example",
                ),
            )
        )
        .with_panel(
            timeseries_panel(
                "Webhook deliveries that gave up or needed retries",
                sql(
                    """
                    SELECT $__timeInterval(finished_at) AS time, endpoint,
                           countIf(outcome != 'delivered') AS gave_up,
                           countIf(outcome = 'delivered' AND attempts > 1) AS retried
                    FROM webhook_deliveries
                    WHERE $__timeFilter(finished_at)
                    GROUP BY time, endpoint
                    ORDER BY time
                    """,
                    "time",
                    "endpoint",
                    "gave_up",
                    "retried",
                    series=True,
                    may_be_empty=True,
                ),
                interval="1m",
                bars=True,
            )
        )
        .with_panel(
            table_panel(
                "Latest failed webhook deliveries",
                sql(
                    """
                    SELECT finished_at, endpoint, url_host, alert_type, alert_status,
                           attempts, status_codes, last_error
                    FROM webhook_deliveries
                    WHERE outcome != 'delivered' AND $__timeFilter(finished_at)
                    ORDER BY finished_at DESC
                    LIMIT 100
                    """,
                    "finished_at",
                    "endpoint",
                    "url_host",
                    "alert_type",
                    "alert_status",
                    "attempts",
                    "status_codes",
                    "last_error",
                    may_be_empty=True,
                ),
            )
        )
    )
    return board.build()
