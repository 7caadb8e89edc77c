"""What to publish: the difference between published and desired alerts (JSON form).

The engine re-derives the desired alerts on every change; publishing only the
difference keeps the `alerts` topic a log of status changes (RULES.md), and turns
an alert that is no longer derived (e.g. after a late fulfilling scan, a due date
change or a cancellation) into an explicit `retracted` record. Both sides are
the alerts' JSON form (`alert_json`), which is what the engine stores and sends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from schemas.alerts import Alert, AlertStatus
from streams.rules.evaluate import customer_json
from streams.rules.facts import format_utc_cached

AlertJson = dict[str, Any]


def _never(_alert: AlertJson) -> bool:
    return False


def alert_changes(
    published: Mapping[str, AlertJson],
    desired: Mapping[str, AlertJson],
    *,
    among: Collection[str] | None = None,
    final: Callable[[AlertJson], bool] = _never,
) -> tuple[list[AlertJson], list[str]]:
    """Alerts to publish, sorted by alert_id: new, changed, and newly retracted ones.

    Every field takes part in the comparison (all of them are derived from facts,
    plan and clock), so a new customer name or severity is re-published too.
    `among` limits the published alerts considered (None: all of them). A
    published alert no longer derived because its fact was folded away (`final`)
    is not retracted but forgotten: its id is in the second list.
    """
    considered = published.keys() if among is None else set(among) & published.keys()
    changes: list[AlertJson] = []
    forgotten: list[str] = []
    for key in sorted(desired.keys() | considered):
        want = desired.get(key)
        have = published.get(key)
        if want is not None:
            if want != have:
                changes.append(want)
        elif have is not None and final(have):
            forgotten.append(key)
        elif have is not None and have["status"] != AlertStatus.RETRACTED.value:
            changes.append({**have, "status": AlertStatus.RETRACTED.value})
    return changes, forgotten


def _seconds(value: float) -> float | int:
    # As `schemas.alerts.Seconds`: whole seconds print as integers.
    return int(value) if float(value).is_integer() else value


def alert_json(alert: Alert) -> AlertJson:
    """`alert.model_dump(mode="json")` for a rules-built alert, without pydantic.

    Every evaluation serialises every desired alert to compare it with the
    published one; pydantic's serialiser was a tenth of the engine's time.
    tests/rules checks the output against `model_dump`.
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
        "lateness_s": None if lateness is None else _seconds(lateness),
        "customer": customer_json(alert.customer),
        "cause": None
        if cause is None
        else {
            "unit_id": cause.unit_id,
            "reason": cause.reason,
            "since": format_utc_cached(cause.since),
        },
        "details": dict(alert.details),
    }
