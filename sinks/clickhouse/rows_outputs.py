"""Engine outputs (alerts, order snapshots, dead letters) and the webhook log → tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
from aiokafka import ConsumerRecord

from schemas.plan import SlaPlan
from sinks.clickhouse import wire
from sinks.clickhouse.mapping import Row, Table, compact_json, kafka_coordinates

ALERT_FIELDS = (
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
)
"""The columns an alert fills, in row order (the sink's `alerts`, backtests' `backtest_alerts`)."""


class AlertRows:
    """`alerts` → `alerts` (ReplacingMergeTree(version), version = Kafka offset).

    An Alert carries no sequence number and neither `detected_at` nor the status
    order is monotonic (open → resolved → open is possible). The topic is keyed by
    alert_id, so all records of an alert share a partition and the one published
    last has the highest offset: that is the version.
    """

    table = Table.of("alerts", *ALERT_FIELDS, "version")

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        alert = wire.ALERT.decode(record.value)
        customer, cause = alert.get("customer"), alert.get("cause")
        row = (
            alert["alert_id"],
            alert["type"],
            alert["severity"],
            alert["status"],
            alert.get("order_id"),
            alert.get("unit_id"),
            alert.get("stage"),
            alert.get("visit"),
            alert["deadline"],
            alert["detected_at"],
            alert.get("fulfilled_at"),
            alert.get("lateness_s"),
            None if customer is None else customer["customer_id"],
            None if customer is None else customer.get("name"),
            "standard" if customer is None else customer.get("tier", "standard"),
            None if cause is None else cause["unit_id"],
            None if cause is None else cause.get("reason"),
            None if cause is None else cause["since"],
            compact_json(alert.get("details") or {}),
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

    def _budget_s(self, stage: str, product: str | None) -> float | None:
        if self.plan is None or not self.plan.knows(stage):
            return None
        return (self.plan.duration(stage, product) + self.plan.grace).total_seconds()

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        state = wire.ORDER_STATE.decode(record.value)
        where = kafka_coordinates(record)
        customer = state.get("customer")
        tier = "standard" if customer is None else customer.get("tier", "standard")
        customer_id = None if customer is None else customer["customer_id"]
        status = state["status"]
        version = state.get("version", 0)
        product = state.get("product")
        visits = state.get("visits") or []
        state_row = (
            state["order_id"],
            status,
            state.get("stage"),
            state.get("visit"),
            state.get("eta"),
            state.get("due_at"),
            tier,
            list(state.get("open_alert_ids") or ()),
            orjson.dumps(visits, option=orjson.OPT_UTC_Z).decode(),
            version,
            state["as_of"],
            *where,
        )
        order_row = (
            state["order_id"],
            customer_id,
            None if customer is None else customer.get("name"),
            tier,
            product,
            state.get("quantity"),
            state.get("placed_at"),
            state.get("due_at"),
            state.get("cancelled_at"),
            status,
            version,
            state["as_of"],
            *where,
        )
        visit_rows: list[Row] = []
        for visit in visits:
            started, ended = visit.get("started_at"), visit.get("ended_at")
            duration = _seconds(started, ended)
            budget = self._budget_s(visit["stage"], product)
            on_time = None if duration is None or budget is None else int(duration <= budget)
            visit_rows.append(
                (
                    state["order_id"],
                    visit["stage"],
                    visit["visit"],
                    visit["unit_id"],
                    started,
                    ended,
                    duration,
                    budget,
                    on_time,
                    visit.get("outcome"),
                    visit.get("quantity"),
                    visit.get("uom"),
                    customer_id,
                    tier,
                    product,
                    version,
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
        "source_file",
        "source_line",
        "source_index",
        "reason_code",
        "reason",
        "errors",
        "key_b64",
        "value_b64",
        "truncated",
        "original_size",
        "original_sha256",
        "original_key_size",
        "original_key_sha256",
        "failed_at",
    )

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        letter = wire.DEAD_LETTER.decode(record.value)
        source = letter["source"]
        row = (
            letter["dead_letter_id"],
            source["kind"],
            source.get("topic"),
            source.get("partition"),
            source.get("offset"),
            source.get("request_id"),
            source.get("file"),
            source.get("line"),
            source.get("index"),
            letter["reason_code"],
            letter["reason"],
            compact_json(
                [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in letter["errors"]]
            ),
            letter.get("key_b64"),
            letter["value_b64"],
            letter.get("truncated", False),
            letter.get("original_size"),
            letter.get("original_sha256"),
            letter.get("original_key_size"),
            letter.get("original_key_sha256"),
            letter["failed_at"],
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
        log = wire.DELIVERY_LOG.decode(record.value)
        row = (
            log["webhook_id"],
            log["alert_id"],
            log["alert_status"],
            log["alert_type"],
            log["endpoint"],
            log["url_host"],
            log["outcome"],
            log["attempts"],
            log["status_codes"],
            log.get("last_error", ""),
            log["first_attempt_at"],
            log["finished_at"],
            log["latency_ms"],
            *kafka_coordinates(record),
        )
        return {"webhook_deliveries": [row]}
