"""Alerts in their JSON form: what the engine compares, stores and sends.

The order side builds its alerts in this form directly (`order_alert_json`):
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

_OPEN = AlertStatus.OPEN.value
_RESOLVED = AlertStatus.RESOLVED.value


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


def order_alert_json(
    alert_id: str,
    type: AlertType,
    severity: Severity,
    order_id: str,
    *,
    deadline: datetime,
    detected_at: datetime,
    stage: str | None,
    visit: int | None,
    unit_id: str | None,
    fulfilled_at: datetime | None,
    customer: dict[str, Any] | None,
    cause: dict[str, Any] | None,
    details: dict[str, Any],
) -> AlertJson:
    """An order alert as `Alert(...).model_dump(mode="json")` would give it."""
    fmt = format_utc_cached
    if fulfilled_at is None:
        status, fulfilled, lateness = _OPEN, None, None
    else:
        status, fulfilled = _RESOLVED, fmt(fulfilled_at)
        lateness = seconds_json((fulfilled_at - deadline).total_seconds())
    return {
        "alert_id": alert_id,
        "type": type.value,
        "severity": severity.value,
        "status": status,
        "order_id": order_id,
        "unit_id": unit_id,
        "stage": stage,
        "visit": visit,
        "deadline": fmt(deadline),
        "detected_at": fmt(detected_at),
        "fulfilled_at": fulfilled,
        "lateness_s": lateness,
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
    lateness = alert.lateness_s
    fulfilled = alert.fulfilled_at
    return {
        "alert_id": alert.alert_id,
        "type": alert.type.value,
        "severity": alert.severity.value,
        "status": alert.status.value,
        "order_id": alert.order_id,
        "unit_id": alert.unit_id,
        "stage": alert.stage,
        "visit": alert.visit,
        "deadline": format_utc_cached(alert.deadline),
        "detected_at": format_utc_cached(alert.detected_at),
        "fulfilled_at": None if fulfilled is None else format_utc_cached(fulfilled),
        "lateness_s": None if lateness is None else seconds_json(lateness),
        "customer": customer_json(alert.customer),
        "cause": None if cause is None else cause_json(cause.unit_id, cause.reason, cause.since),
        "details": dict(alert.details),
    }
