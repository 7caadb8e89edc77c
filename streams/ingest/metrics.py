"""Prometheus metrics of one gateway app (its own registry, so apps in one process never clash)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


@dataclass
class GatewayMetrics:
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
            "`invalid_items`, `kafka_unavailable`, ...).",
            ["endpoint", "error"],
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

        self.protocol_refusals = Counter(
            "chainwatch_gateway_protocol_refusals",
            "Requests the HTTP layer refused before any operation ran, by status and error "
            "(`bad_request`, `headers_too_large`, `too_many_connections`).",
            ["status", "error"],
            registry=self.registry,
        )

    def protocol_refused(self, status: int, error: str) -> None:
        """A refusal of the HTTP protocol (`chainwatch.gateway_protocol`), which runs
        before the app and so outside its request metrics."""
        self.protocol_refusals.labels(str(status), error).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
