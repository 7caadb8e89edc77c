"""Pipeline health (Prometheus): what every long-running process reports about itself.

The other dashboards read ClickHouse, i.e. what the pipeline stored; this one
reads the processes' own Prometheus metrics (worker, sink, gateway, notifier;
docs/observability.md), so it also shows a pipeline that stores nothing: lag
growing, records dead-lettered, a sink paused for ClickHouse, webhooks failing.
Every query names its metric in full, so `metric_names` can check that each is
exported (tests/dashboards/test_prometheus_dashboard.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

from dashboards.base import new_dashboard
from schemas.plan import SlaPlan

UID = "cw-pipeline-prom"
DATASOURCE_UID = "chainwatch-prometheus"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
RATE = "[$__rate_interval]"

_METRIC = re.compile(r"\bchainwatch_[a-z0-9_]+")


def promql(expr: str, legend: str = "__auto", ref_id: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .range()
        .datasource(DATASOURCE)
    )


def rate(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{RATE}))"


def quantile(q: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{RATE})))"


def series(
    title: str,
    *targets: prometheus.Dataquery,
    unit: str = "short",
    span: int = 12,
    description: str = "",
    bars: bool = False,
) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).datasource(DATASOURCE).span(span).height(8).unit(unit)
    if description:
        panel = panel.description(description)
    for target in targets:
        panel = panel.with_target(target)
    if bars:
        panel = panel.draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(60)
    return panel


def single(title: str, target: prometheus.Dataquery, *, unit: str = "short") -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(target)
        .span(6)
        .height(5)
        .unit(unit)
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
    )


def build(plan: SlaPlan) -> models.Dashboard:
    del plan
    records = "chainwatch_worker_records_total"
    board = (
        new_dashboard(
            UID,
            "Chainwatch: pipeline health (Prometheus)",
            "The processes' own metrics: worker lag and throughput, deadlines, dead letters, "
            "sink writes, gateway requests, webhook deliveries.",
            time_from="now-1h",
        )
        .with_row(dashboard.Row("Worker"))
        .with_panel(single("Workers ready", promql("sum(chainwatch_worker_ready)")))
        .with_panel(
            single("Consumer lag (records)", promql("sum(chainwatch_worker_consumer_lag_records)"))
        )
        .with_panel(
            single(
                "Oldest due deadline not fired",
                promql("max(chainwatch_worker_deadline_overdue_seconds)"),
                unit="s",
            )
        )
        .with_panel(
            single(
                "Records dead-lettered or failed / s",
                promql(f'sum(rate({records}{{outcome=~"dead_lettered|processing_error"}}{RATE}))'),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Records handled per second, by topic and outcome",
                promql(rate(records, "topic, outcome"), "{{topic}} {{outcome}}"),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Processing time per record (p50, p99)",
                promql(
                    quantile(0.5, "chainwatch_worker_processing_seconds", "topic"),
                    "p50 {{topic}}",
                ),
                promql(
                    quantile(0.99, "chainwatch_worker_processing_seconds", "topic"),
                    "p99 {{topic}}",
                    "B",
                ),
                unit="s",
            )
        )
        .with_panel(
            series(
                "Consumer lag per partition",
                promql(
                    "sum by (topic, partition) (chainwatch_worker_consumer_lag_records)",
                    "{{topic}}/{{partition}}",
                ),
                description="High watermark minus committed offset of each input partition "
                "a worker owns. Growing: the workers cannot keep up.",
            )
        )
        .with_panel(
            series(
                "Deadline index and overdue deadlines",
                promql("sum(chainwatch_worker_deadline_index_entries)", "scheduled deadlines"),
                promql(
                    "max by (partition) (chainwatch_worker_deadline_overdue_seconds)",
                    "overdue s, partition {{partition}}",
                    "B",
                ),
            )
        )
        .with_panel(
            series(
                "Alerts published per second, by type and status",
                promql(
                    rate("chainwatch_worker_alerts_published_total", "type, status"),
                    "{{type}} {{status}}",
                ),
                unit="reqps",
                bars=True,
            )
        )
        .with_panel(
            series(
                "Dead letters per second, by reason (worker)",
                promql(rate("chainwatch_worker_dead_letters_total", "reason"), "{{reason}}"),
                unit="reqps",
                bars=True,
            )
        )
        .with_panel(
            series(
                "Engine table keys",
                promql("sum by (table) (chainwatch_worker_table_keys)", "{{table}}"),
                description="Keys held per table (active and standby copies); bounded by the "
                "closed-order retention.",
            )
        )
        .with_panel(
            series(
                "Records per fetch from Kafka (p50, p99)",
                promql(quantile(0.5, "chainwatch_worker_fetch_records"), "p50"),
                promql(quantile(0.99, "chainwatch_worker_fetch_records"), "p99", "B"),
                description="The batches the workers' consumers get (at most "
                "broker_max_poll_records, 2000): small batches at high lag mean the worker "
                "waits on fetches, not on the engine.",
            )
        )
        .with_panel(
            series(
                "Input partitions owned, by topic",
                promql("sum by (topic) (chainwatch_worker_assigned_partitions)", "{{topic}}"),
            )
        )
        .with_panel(
            series(
                "Clocks held after a start or takeover (live)",
                promql(
                    "max by (partition) (chainwatch_worker_clock_held_seconds)",
                    "held s, partition {{partition}}",
                ),
                unit="s",
                description="A live worker judges no deadline of a partition new to it "
                "until it has read what waited there in Kafka (docs/rules.md, The clock). "
                "Seconds to minutes after a restart is normal; a series near 600 s "
                "means the backlog was not read in time and the clock was let go.",
            )
        )
        .with_panel(
            series(
                "Offset commit waiting for the coordinator",
                promql(
                    "max by (instance) (chainwatch_worker_commit_pending_seconds)",
                    "waiting s, {{instance}}",
                ),
                unit="s",
                description="A commit takes milliseconds. A line that climbs means the "
                "consumer group's coordinator does not answer: nothing is committed, and "
                "past 30 s the worker answers /readyz 503 (log worker_commit_stuck).",
            )
        )
        .with_row(dashboard.Row("ClickHouse sink"))
        .with_panel(
            series(
                "Rows written per second, by table",
                promql(rate("chainwatch_sink_rows_written_total", "table"), "{{table}}"),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Flush time (p99), buffered rows, paused",
                promql(quantile(0.99, "chainwatch_sink_flush_seconds"), "flush p99 s"),
                promql("sum(chainwatch_sink_buffered_rows)", "buffered rows", "B"),
                promql("max(chainwatch_sink_paused)", "paused", "C"),
            )
        )
        .with_panel(
            series(
                "Invalid records and insert retries per second",
                promql(rate("chainwatch_sink_invalid_records_total", "topic"), "invalid {{topic}}"),
                promql(
                    "sum(rate(chainwatch_sink_insert_retries_total" + RATE + "))", "retries", "B"
                ),
                unit="reqps",
                span=24,
            )
        )
        .with_row(dashboard.Row("Ingest gateway"))
        .with_panel(
            series(
                "Requests per second, by status",
                promql(rate("chainwatch_gateway_requests_total", "status"), "{{status}}"),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Items per second by outcome, publish time (p99)",
                promql(rate("chainwatch_gateway_items_total", "outcome"), "items {{outcome}}"),
                promql(quantile(0.99, "chainwatch_gateway_publish_seconds"), "publish p99 s", "B"),
            )
        )
        .with_panel(
            series(
                "Errors per second, by code",
                promql(rate("chainwatch_gateway_errors_total", "error"), "{{error}}"),
                promql(
                    rate("chainwatch_gateway_protocol_refusals_total", "error"),
                    "refused {{error}}",
                    "B",
                ),
                unit="reqps",
                span=24,
                description="What clients were told, by the error code of the answer's body "
                "(docs/ingest.md): `kafka_unavailable` and `topic_not_authorized` are the "
                "operator's to fix, `publish_timeout`, `overloaded` and (refused) "
                "`too_many_connections` are the gateway at its capacity, `shutting_down` a "
                "gateway stopping (a rollout), `publish_failed` a fault of the gateway's own "
                "(its log says which: a bug to report), `epcis_not_configured` a gateway "
                "without its EPCIS mapping, the others are the clients' (their items, sizes, "
                "tokens); refused: requests the HTTP layer answered before any operation ran.",
            )
        )
        .with_panel(
            series(
                "Kafka transactions: requests per transaction, failed by cause",
                promql(
                    "sum(rate(chainwatch_gateway_transaction_requests_sum" + RATE + ")) / "
                    "sum(rate(chainwatch_gateway_transaction_requests_count" + RATE + "))",
                    "requests per transaction",
                ),
                promql(
                    rate("chainwatch_gateway_transactions_failed_total", "cause"),
                    "failed {{cause}}",
                    "B",
                ),
                span=24,
                description="Posts waiting while every transactional producer is busy share "
                "the next transaction (docs/ingest.md, Transactions): well above 1 means the "
                "producers are the gateway's bottleneck; a failed transaction answers each "
                "of its requests 503.",
            )
        )
        .with_row(dashboard.Row("Webhooks"))
        .with_panel(
            series(
                "Deliveries per second, by endpoint and outcome",
                promql(
                    rate("chainwatch_webhook_deliveries_total", "endpoint, outcome"),
                    "{{endpoint}} {{outcome}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "Queue depth and failed attempts",
                promql("sum by (endpoint) (chainwatch_webhook_queue_depth)", "queue {{endpoint}}"),
                promql(
                    "sum by (endpoint, result) "
                    f'(rate(chainwatch_webhook_attempts_total{{result!="2xx"}}{RATE}))',
                    "failed {{endpoint}} {{result}}",
                    "B",
                ),
            )
        )
        .with_panel(
            series(
                "Oldest pending delivery, by endpoint",
                promql(
                    "max by (endpoint) (chainwatch_webhook_oldest_pending_seconds)",
                    "{{endpoint}}",
                ),
                unit="s",
                span=24,
                description="Age of the endpoint's oldest delivery not yet finished (queued, "
                "being attempted or waiting to retry), counted from when this notifier read "
                "it; 0 when none is pending. Rising past a few timeout_s: the endpoint is "
                "held up behind retries, which queue depth does not show when alerts are "
                "rare. A restart resets it: watch notifier restarts too (docs/sinks.md).",
            )
        )
        .with_panel(
            series(
                "Repeats not delivered per second",
                promql(
                    rate("chainwatch_webhook_repeats_skipped_total", "endpoint"),
                    "{{endpoint}}",
                ),
                unit="reqps",
                description="An unchanged re-publish of an alert that the endpoint "
                "already has (a worker re-announces what it owns after every restart).",
            )
        )
        .with_panel(
            series(
                "Partitions read back, by outcome",
                promql(
                    "sum by (endpoint, outcome) "
                    "(increase(chainwatch_webhook_warmups_total[$__interval]))",
                    "{{endpoint}} {{outcome}}",
                ),
                bars=True,
                description="At each assignment (start, rebalance) an endpoint reads the "
                "records before its position to know what it already has; a failed one "
                "means repeats may be delivered again (webhook_warmup_failed in the log).",
            )
        )
    )
    return board.build()


def expressions(board: models.Dashboard) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus target of a dashboard."""
    for panel in board.panels or []:
        if not isinstance(panel, models.Panel):
            continue
        for target in panel.targets or []:
            expr = getattr(target, "expr", None)
            if isinstance(expr, str):
                yield panel.title or "", expr


def metric_names(board: models.Dashboard) -> set[str]:
    """Every `chainwatch_*` series name the dashboard's queries read."""
    return {name for _, expr in expressions(board) for name in _METRIC.findall(expr)}
