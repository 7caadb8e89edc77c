"""Builders for sink and webhook tests: the engine's outputs (alerts, order states) and
consumer records; input records are tests/samples.py's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord

from schemas.alerts import Alert, AlertCustomer, AlertStatus, AlertType, Severity, alert_id
from schemas.order_state import OrderState, OrderStatus, VisitState
from schemas.plan import Tier

BASE = datetime(2027, 3, 1, tzinfo=UTC)


def h(hours: float) -> datetime:
    return BASE + timedelta(hours=hours)


def record(
    value: bytes | None,
    *,
    topic: str = "t",
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=(),
    )


def make_alert(
    n: int,
    status: AlertStatus = AlertStatus.OPEN,
    *,
    severity: Severity = Severity.CRITICAL,
    tier: Tier = "platinum",
    stage: str = "dyeing",
) -> Alert:
    order = f"PO-{n}"
    deadline = h(n)
    return Alert(
        alert_id=alert_id(AlertType.STAGE_OVERDUE, order, stage, 1, deadline),
        type=AlertType.STAGE_OVERDUE,
        severity=severity,
        status=status,
        order_id=order,
        stage=stage,
        visit=1,
        unit_id="DYE-01",
        deadline=deadline,
        detected_at=deadline,
        fulfilled_at=h(n + 2) if status is AlertStatus.RESOLVED else None,
        customer=AlertCustomer(customer_id=f"C-{n % 3}", name="Nordic Knits AB", tier=tier),
    )


def make_state(n: int, version: int, *, ended: bool = True) -> OrderState:
    visits = [
        VisitState(
            stage="yarn_sourcing",
            visit=1,
            unit_id="YARN-01",
            started_at=h(0),
            ended_at=h(10),
            outcome="completed",
        ),
        VisitState(
            stage="dyeing",
            visit=1,
            unit_id="DYE-01",
            started_at=h(10),
            ended_at=h(60) if ended else None,
            outcome="completed" if ended else None,
        ),
    ]
    return OrderState(
        order_id=f"PO-{n}",
        customer=AlertCustomer(customer_id="C-7", name="Nordic Knits AB", tier="gold"),
        product="merino-crewneck",
        quantity=500,
        placed_at=h(-1),
        due_at=h(300),
        stage="dyeing",
        visit=1,
        status=OrderStatus.ON_TRACK,
        visits=visits,
        version=version,
        as_of=h(version),
    )
