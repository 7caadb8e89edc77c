"""Engine outputs (alerts, order snapshots, dead letters) and the webhook log → tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from aiokafka import ConsumerRecord
from pydantic import BaseModel, ValidationError

from schemas.alerts import Alert
from schemas.dead_letter import DeadLetter
from schemas.order_state import OrderState, VisitState
from schemas.plan import SlaPlan
from sinks.clickhouse.mapping import (
    RecordInvalid,
    Row,
    Table,
    compact_json,
    kafka_coordinates,
)
from sinks.webhooks.records import DeliveryLog

M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], record: ConsumerRecord[bytes, bytes]) -> M:
    if record.value is None:
        raise RecordInvalid("null value")
    try:
        return model.model_validate_json(record.value)
    except ValidationError as exc:
        raise RecordInvalid(f"{model.__name__}: {exc.error_count()} errors") from None


class AlertRows:
    """`alerts` → `alerts` (ReplacingMergeTree(version), version = Kafka offset).

    An Alert carries no sequence number and neither `detected_at` nor the status
    order is monotonic (open → resolved → open is possible). The topic is keyed by
    alert_id, so all records of an alert share a partition and the one published
    last has the highest offset: that is the version.
    """

    table = Table.of(
        "alerts",
        "alert_id",
        "type",
        "severity",
        "status",
        "order_id",
        "unit_id",
        "stage",
        "visit",
        "deadline",
        "detected_at",
        "fulfilled_at",
        "lateness_s",
        "customer_id",
        "customer_name",
        "customer_tier",
        "cause_unit_id",
        "cause_reason",
        "cause_since",
        "details",
        "version",
    )

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        alert = _parse(Alert, record)
        customer, cause = alert.customer, alert.cause
        row = (
            alert.alert_id,
            alert.type.value,
            alert.severity.value,
            alert.status.value,
            alert.order_id,
            alert.unit_id,
            alert.stage,
            alert.visit,
            alert.deadline,
            alert.detected_at,
            alert.fulfilled_at,
            alert.lateness_s,
            None if customer is None else customer.customer_id,
            None if customer is None else customer.name,
            "standard" if customer is None else customer.tier,
            None if cause is None else cause.unit_id,
            None if cause is None else cause.reason,
            None if cause is None else cause.since,
            compact_json(alert.details),
            record.offset,
            *kafka_coordinates(record),
        )
        return {"alerts": [row]}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


class OrderStateRows:
    """`order-state` → `order_state`, `orders` and one `stage_visits` row per visit.

    version is the engine's snapshot version (it grows with every snapshot of an
    order). The on-time flag compares a visit's duration with its budget in the
    SLA plan (product override first) plus the plan's grace.
    """

    order_state = Table.of(
        "order_state",
        "order_id",
        "status",
        "stage",
        "visit",
        "eta",
        "due_at",
        "customer_tier",
        "open_alert_ids",
        "visits",
        "version",
        "as_of",
    )
    orders = Table.of(
        "orders",
        "order_id",
        "customer_id",
        "customer_name",
        "customer_tier",
        "product",
        "quantity",
        "placed_at",
        "due_at",
        "cancelled_at",
        "status",
        "version",
        "as_of",
    )
    stage_visits = Table.of(
        "stage_visits",
        "order_id",
        "stage",
        "visit",
        "unit_id",
        "started_at",
        "ended_at",
        "duration_s",
        "budget_s",
        "on_time",
        "outcome",
        "quantity",
        "uom",
        "customer_id",
        "customer_tier",
        "product",
        "version",
    )

    def __init__(self, plan: SlaPlan | None = None) -> None:
        self.plan = plan

    @property
    def tables(self) -> Sequence[Table]:
        return (self.order_state, self.orders, self.stage_visits)

    def _budget_s(self, visit: VisitState, product: str | None) -> float | None:
        if self.plan is None or not self.plan.knows(visit.stage):
            return None
        return (self.plan.duration(visit.stage, product) + self.plan.grace).total_seconds()

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        state = _parse(OrderState, record)
        where = kafka_coordinates(record)
        customer = state.customer
        tier = "standard" if customer is None else customer.tier
        customer_id = None if customer is None else customer.customer_id
        state_row = (
            state.order_id,
            state.status.value,
            state.stage,
            state.visit,
            state.eta,
            state.due_at,
            tier,
            list(state.open_alert_ids),
            compact_json([v.model_dump(mode="json") for v in state.visits]),
            state.version,
            state.as_of,
            *where,
        )
        order_row = (
            state.order_id,
            customer_id,
            None if customer is None else customer.name,
            tier,
            state.product,
            state.quantity,
            state.placed_at,
            state.due_at,
            state.cancelled_at,
            state.status.value,
            state.version,
            state.as_of,
            *where,
        )
        visit_rows: list[Row] = []
        for visit in state.visits:
            duration = _seconds(visit.started_at, visit.ended_at)
            budget = self._budget_s(visit, state.product)
            on_time = None if duration is None or budget is None else int(duration <= budget)
            visit_rows.append(
                (
                    state.order_id,
                    visit.stage,
                    visit.visit,
                    visit.unit_id,
                    visit.started_at,
                    visit.ended_at,
                    duration,
                    budget,
                    on_time,
                    visit.outcome,
                    visit.quantity,
                    visit.uom,
                    customer_id,
                    tier,
                    state.product,
                    state.version,
                    *where,
                )
            )
        return {"order_state": [state_row], "orders": [order_row], "stage_visits": visit_rows}


class DeadLetterRows:
    """`dead-letter` → `dead_letters` (append-only)."""

    table = Table.of(
        "dead_letters",
        "dead_letter_id",
        "source_kind",
        "source_topic",
        "source_partition",
        "source_offset",
        "request_id",
        "reason_code",
        "reason",
        "errors",
        "key_b64",
        "value_b64",
        "failed_at",
    )

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        letter = _parse(DeadLetter, record)
        source = letter.source
        row = (
            letter.dead_letter_id,
            source.kind,
            source.topic,
            source.partition,
            source.offset,
            source.request_id,
            letter.reason_code.value,
            letter.reason,
            compact_json([e.model_dump() for e in letter.errors]),
            letter.key_b64,
            letter.value_b64,
            letter.failed_at,
            *kafka_coordinates(record),
        )
        return {"dead_letters": [row]}


class DeliveryLogRows:
    """`webhook-deliveries` (written by `chainwatch notify`) → `webhook_deliveries`."""

    table = Table.of(
        "webhook_deliveries",
        "webhook_id",
        "alert_id",
        "alert_status",
        "alert_type",
        "endpoint",
        "url_host",
        "outcome",
        "attempts",
        "status_codes",
        "last_error",
        "first_attempt_at",
        "finished_at",
        "latency_ms",
    )

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        log = _parse(DeliveryLog, record)
        row = (
            log.webhook_id,
            log.alert_id,
            log.alert_status,
            log.alert_type,
            log.endpoint,
            log.url_host,
            log.outcome,
            log.attempts,
            list(log.status_codes),
            log.last_error,
            log.first_attempt_at,
            log.finished_at,
            log.latency_ms,
            *kafka_coordinates(record),
        )
        return {"webhook_deliveries": [row]}
