"""Prometheus metrics of `chainwatch notify`."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "chainwatch_webhook_deliveries",
    "Finished deliveries by outcome (delivered, gave_up)",
    ["endpoint", "outcome"],
)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other", "error")
"""The `result` label's values: a bounded set. h11 takes any three digits as a status, so
a receiver answering 600 or 999 made a series of its own (`6xx`, `9xx`) that no dashboard
or alert rule knew; such answers (and an unsolicited 1xx) are `other`."""


def status_class(status: int) -> str:
    """An attempt's `result` label: `error` when no answer came (status 0)."""
    if status == 0:
        return "error"
    return f"{status // 100}xx" if 200 <= status <= 599 else "other"


ATTEMPTS = Counter(
    "chainwatch_webhook_attempts",
    "HTTP attempts by status class (2xx, 3xx, 4xx, 5xx, other, error)",
    ["endpoint", "result"],
)
QUEUE_DEPTH = Gauge("chainwatch_webhook_queue_depth", "Deliveries waiting", ["endpoint"])
OLDEST_PENDING = Gauge(
    "chainwatch_webhook_oldest_pending_seconds",
    "Seconds since the endpoint's oldest unfinished delivery (queued, being attempted or "
    "waiting to retry) was read from alerts; 0 when none is pending",
    ["endpoint"],
)
LATENCY = Histogram(
    "chainwatch_webhook_delivery_seconds",
    "First attempt to final outcome",
    ["endpoint"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 3600),
)
INVALID_ALERTS = Counter(
    "chainwatch_webhook_invalid_alerts",
    "Records on the alerts topic that are not alerts (each endpoint reads them all)",
    ["endpoint"],
)
LOG_PRODUCER_RENEWALS = Counter(
    "chainwatch_webhook_log_producer_renewals",
    "Delivery-log producers replaced because aiokafka's sender ended for good "
    "(OutOfOrderSequenceNumber after a broker restart)",
)
LOG_REFUSED = Counter(
    "chainwatch_webhook_log_refused",
    "Delivery-log or dead-letter records the broker refused for good (a bug: records are bounded)",
    ["topic"],
)
REPEATS_SKIPPED = Counter(
    "chainwatch_webhook_repeats_skipped",
    "Alert records not delivered: an unchanged re-publish of the latest message of their "
    "alert, which the endpoint already has (delivered or pending)",
    ["endpoint"],
)
FINISHED_SKIPPED = Counter(
    "chainwatch_webhook_finished_skipped",
    "Alert records not delivered again after a restart or rebalance: their delivery had "
    "finished above the committed position (recorded in the commit's metadata)",
    ["endpoint"],
)
SILENCED = Counter(
    "chainwatch_webhook_silenced",
    "Deliveries not sent because a silence (maintenance window) was in force; each "
    "recorded in webhook-deliveries with outcome silenced",
    ["endpoint"],
)
RELEASED = Counter(
    "chainwatch_webhook_released",
    "Alerts a silence held, sent once no silence covered them any more (still open); "
    "each also counted in deliveries by its outcome",
    ["endpoint"],
)
HELD = Gauge(
    "chainwatch_webhook_held",
    "Messages a silence holds now (open alerts recorded silenced, kept to be sent when "
    "their silence ends), of the endpoint's assigned partitions",
    ["endpoint"],
)
HELD_OVER_BOUND = Counter(
    "chainwatch_webhook_held_over_bound",
    "Silenced messages not kept in memory because the endpoint held its bound already: "
    "kept on webhook-held, read back once the endpoint holds fewer",
    ["endpoint"],
)
WARMUPS = Counter(
    "chainwatch_webhook_warmups",
    "Partitions read back before delivering (the memory of repeats), by outcome (done, failed)",
    ["endpoint", "outcome"],
)


def start_series(
    endpoint: str,
    log_topics: tuple[str, ...],
    oldest_pending_s: Callable[[], float],
    held: Callable[[], float] = lambda: 0.0,
) -> None:
    """Every series of `endpoint` (and the delivery log's topics) exported from its start,
    at zero: a dashboard, `increase()` or an `absent()` alert rule sees a quiet endpoint
    as 0 rather than as missing (a labelled series exists only once it was used).
    `oldest_pending_s` is the endpoint's `PendingAges.oldest_s`, `held` how many
    messages it holds (`EndpointPipe.held`)."""
    for outcome in ("delivered", "gave_up"):
        DELIVERIES.labels(endpoint, outcome)
    for result in STATUS_CLASSES:
        ATTEMPTS.labels(endpoint, result)
    QUEUE_DEPTH.labels(endpoint).set(0)
    OLDEST_PENDING.labels(endpoint).set_function(oldest_pending_s)  # read at each scrape
    LATENCY.labels(endpoint)
    INVALID_ALERTS.labels(endpoint)
    REPEATS_SKIPPED.labels(endpoint)
    FINISHED_SKIPPED.labels(endpoint)
    SILENCED.labels(endpoint)
    RELEASED.labels(endpoint)
    HELD.labels(endpoint).set_function(held)  # read at each scrape
    HELD_OVER_BOUND.labels(endpoint)
    for outcome in ("done", "failed"):
        WARMUPS.labels(endpoint, outcome)
    for topic in log_topics:
        LOG_REFUSED.labels(topic)
