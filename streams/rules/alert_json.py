"""Alerts in their JSON form: what the engine compares, stores and sends.

The order side builds its alerts in this form directly (`alert_body`):
every evaluation derives every alert of the order again, and building a
pydantic model per alert only to dump it again cost a tenth of the engine's
time. The models (`schemas.alerts.Alert`) stay the contract: tests/rules checks
that each form here is the model's `model_dump(mode="json")`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.alerts import Alert, AlertCustomer, AlertStatus, AlertType, Severity
from streams.rules.facts import format_utc_cached

AlertJson = dict[str, Any]


def seconds_json(value: float) -> float | int:
    """As `schemas.alerts.Seconds`: whole seconds print as integers."""
    return int(value) if float(value).is_integer() else value


def customer_json(customer: AlertCustomer | None) -> dict[str, Any] | None:
    if customer is None:
        return None
    return {"customer_id": customer.customer_id, "name": customer.name, "tier": customer.tier}


def cause_json(unit_id: str, reason: str | None, since: datetime) -> dict[str, Any]:
    """An `AlertCause`'s JSON form."""
    return {"unit_id": unit_id, "reason": reason, "since": format_utc_cached(since)}


def alert_body(
    alert_id: str,
    type: AlertType,
    severity: Severity,
    status: AlertStatus,
    *,
    order_id: str | None,
    unit_id: str | None,
    stage: str | None,
    visit: int | None,
    deadline: datetime,
    detected_at: datetime,
    fulfilled_at: datetime | None,
    lateness_s: float | None,
    customer: dict[str, Any] | None,
    cause: dict[str, Any] | None,
    details: dict[str, Any],
) -> AlertJson:
    """An alert as `Alert(...).model_dump(mode="json")` would give it: the one layout."""
    fmt = format_utc_cached
    return {  # `_value_`, not `.value`: the enum property is Python code, for every alert
        "alert_id": alert_id,
        "type": type._value_,
        "severity": severity._value_,
        "status": status._value_,
        "order_id": order_id,
        "unit_id": unit_id,
        "stage": stage,
        "visit": visit,
        "deadline": fmt(deadline),
        "detected_at": fmt(detected_at),
        "fulfilled_at": None if fulfilled_at is None else fmt(fulfilled_at),
        "lateness_s": None if lateness_s is None else seconds_json(lateness_s),
        "customer": customer,
        "cause": cause,
        "details": details,
    }


def alert_json(alert: Alert) -> AlertJson:
    """`alert.model_dump(mode="json")` for a rules-built alert, without pydantic.

    Every evaluation of a unit serialises its desired alerts to compare them with
    the published ones; pydantic's serialiser was a tenth of the engine's time.
    """
    cause = alert.cause
    return alert_body(
        alert.alert_id,
        alert.type,
        alert.severity,
        alert.status,
        order_id=alert.order_id,
        unit_id=alert.unit_id,
        stage=alert.stage,
        visit=alert.visit,
        deadline=alert.deadline,
        detected_at=alert.detected_at,
        fulfilled_at=alert.fulfilled_at,
        lateness_s=alert.lateness_s,
        customer=customer_json(alert.customer),
        cause=None if cause is None else cause_json(cause.unit_id, cause.reason, cause.since),
        details=dict(alert.details),
    )
