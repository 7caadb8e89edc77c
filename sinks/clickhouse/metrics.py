"""Prometheus metrics of the ClickHouse sink (served when `metrics_port` is set)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("chainwatch_sink_records", "Kafka records consumed by the sink", ["topic"])
INVALID = Counter(
    "chainwatch_sink_invalid_records",
    "Records skipped because they break the contract (inputs are dead-lettered by the engine)",
    ["topic"],
)
FORWARDED = Counter(
    "chainwatch_sink_forwarded_records",
    "Input records skipped because they were read from another partition than their id's: "
    "the engine forwards a copy there, whose rows are stored",
    ["topic"],
)
SKIPPED = Counter(
    "chainwatch_sink_already_stored",
    "Record rows skipped because ClickHouse already had their offset (after a crash)",
    ["topic"],
)
ROWS_WRITTEN = Counter("chainwatch_sink_rows_written", "Rows inserted into ClickHouse", ["table"])
INSERT_RETRIES = Counter(
    "chainwatch_sink_insert_retries", "Failed ClickHouse calls that will be retried"
)
BUFFERED_ROWS = Gauge("chainwatch_sink_buffered_rows", "Rows waiting in the sink's buffers")
PAUSED = Gauge(
    "chainwatch_sink_paused",
    "1 while the sink waits for ClickHouse: consumption paused, or its start or a "
    "partition's read-back retried",
)
FLUSH_SECONDS = Histogram(
    "chainwatch_sink_flush_seconds",
    "Time to insert all buffers and commit offsets",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def start_series(topics: Iterable[str], inputs: Iterable[str], tables: Iterable[str]) -> None:
    """Every counter series of the sink exported from its start, at zero: `rate()`,
    `increase()` and a dashboard see a quiet topic or table as 0 rather than as no data
    (a labelled series exists only once it was used; the unlabelled ones already do).
    `topics`: those it stores; `inputs`: those of them it may skip as forwarded; `tables`:
    those its mappers fill."""
    for topic in topics:
        RECORDS.labels(topic)
        INVALID.labels(topic)
        SKIPPED.labels(topic)
    for topic in inputs:
        FORWARDED.labels(topic)
    for table in tables:
        ROWS_WRITTEN.labels(table)
