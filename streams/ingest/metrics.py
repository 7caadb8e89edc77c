"""Prometheus metrics of one gateway app (its own registry, so apps in one process never clash)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


def size_buckets(largest: int) -> tuple[float, ...]:
    """1, 2, 4, ... and `largest` itself: a group's size is bounded by it, and powers of
    two tell one request alone from a handful and from a full group in a few buckets."""
    buckets: list[float] = []
    size = 1
    while size < largest:
        buckets.append(size)
        size *= 2
    buckets.append(max(largest, 1))
    return tuple(buckets)


ITEM_OUTCOMES = ("accepted", "rejected")
ALERTED_ERRORS = ("kafka_unavailable", "publish_timeout", "overloaded", "publish_failed")
"""The `error` codes the shipped alert rules ask `rate()` of (deploy/prometheus), at 0 per
endpoint from the start; the other codes (a client's faults) appear when first answered."""
TRANSACTION_FAILURE_CAUSES = (
    "kafka_error",
    "deadline",
    "commit_unanswered",
    "record_too_large",
    "topic_not_authorized",
    "shutdown",
    "hung",
    "unexpected",
)
"""Every `cause` of `chainwatch_gateway_transactions_failed_total` (streams.ingest.publisher)."""
PROTOCOL_REFUSALS = (
    (400, "bad_request"),
    (431, "headers_too_large"),
    (503, "too_many_connections"),
)
"""Every `status`, `error` of `chainwatch_gateway_protocol_refusals_total` (chainwatch.
gateway_protocol)."""


@dataclass
class GatewayMetrics:
    max_group_records: int
    """The gateway's `max_items`: no group transaction holds more (streams.ingest.groups)."""
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "chainwatch_gateway_requests",
            "HTTP ingest requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.items = Counter(
            "chainwatch_gateway_items",
            "Items by endpoint and outcome (accepted = committed to Kafka; "
            "rejected = answered 422 or dead-lettered).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "chainwatch_gateway_errors",
            "Requests answered with an error, by endpoint and error code (`too_large`, "
            "`invalid_items`, `kafka_unavailable` only for Kafka's failures, "
            "`publish_timeout` for the request's own time, `publish_failed` for a fault "
            "of the gateway's own, `topic_not_authorized`, `shutting_down`, ...).",
            ["endpoint", "error"],
            registry=self.registry,
        )
        self.item_faults = Counter(
            "chainwatch_gateway_item_faults",
            "Items whose check raised inside the gateway (a bug of its own: logged `item "
            "processing failed` with the traceback; the item refused `processing_error`, "
            "answered 422 `invalid_items` or, in partial mode, dead-lettered).",
            ["endpoint"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "chainwatch_gateway_requests_in_flight",
            "Ingest requests being handled now (body still arriving, judged or publishing): "
            "one that stays up is a client holding its request open.",
            ["endpoint"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "chainwatch_gateway_requests_waiting",
            "Requests waiting for admission, beyond the `limit_concurrency` handled at once "
            "(each at most `admission_wait_s`, then 503 `overloaded`).",
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "chainwatch_gateway_publish_seconds",
            "Time from the first send to the committed Kafka transaction of a request.",
            ["endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        group_buckets = size_buckets(self.max_group_records)
        self.transaction_requests = Histogram(
            "chainwatch_gateway_transaction_requests",
            "Requests per committed Kafka transaction (group commit: the requests that "
            "waited for a producer share its next one).",
            buckets=group_buckets,
            registry=self.registry,
        )
        self.transaction_records = Histogram(
            "chainwatch_gateway_transaction_records",
            "Records per committed Kafka transaction.",
            buckets=group_buckets,
            registry=self.registry,
        )
        self.transactions_failed = Counter(
            "chainwatch_gateway_transactions_failed",
            "Kafka transactions of a group not committed, by cause (`kafka_error`, "
            "`deadline`, `commit_unanswered`, `record_too_large`, `topic_not_authorized`, "
            "`shutdown`, `hung`, `unexpected`).",
            ["cause"],
            registry=self.registry,
        )
        self.protocol_refusals = Counter(
            "chainwatch_gateway_protocol_refusals",
            "Requests the HTTP layer refused before any operation ran, by status and error "
            "(`bad_request`, `headers_too_large`, `too_many_connections`).",
            ["status", "error"],
            registry=self.registry,
        )

    def start_series(self, endpoints: Iterable[str], *, without_items: Iterable[str] = ()) -> None:
        """The counter series of a closed set of labels exported from the start, at zero:
        `rate()`/`increase()` and the dashboards see a quiet endpoint, or no failed
        transaction yet, as 0 rather than as no data (a labelled series exists only once
        it was used). Not `requests{endpoint,status}`: its statuses are not a closed set.
        `without_items`: endpoints that take no items (`customers-delete`)."""
        endpoints = list(endpoints)
        for endpoint in endpoints:
            for outcome in ITEM_OUTCOMES:
                self.items.labels(endpoint, outcome)
            self.item_faults.labels(endpoint)
        for endpoint in (*endpoints, *without_items):
            for error in ALERTED_ERRORS:
                self.errors.labels(endpoint, error)
        for cause in TRANSACTION_FAILURE_CAUSES:
            self.transactions_failed.labels(cause)
        for status, error in PROTOCOL_REFUSALS:
            self.protocol_refusals.labels(str(status), error)

    def protocol_refused(self, status: int, error: str) -> None:
        """A refusal of the HTTP protocol (`chainwatch.gateway_protocol`), which runs
        before the app and so outside its request metrics."""
        self.protocol_refusals.labels(str(status), error).inc()

    def transaction_committed(self, requests: int, records: int) -> None:
        """A group's transaction committed (`streams.ingest.publisher.GroupObserver`)."""
        self.transaction_requests.observe(requests)
        self.transaction_records.observe(records)

    def transaction_failed(self, cause: str) -> None:
        """A group's transaction was not committed, or not known to be."""
        self.transactions_failed.labels(cause).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
