"""The `alerts` topic (CONTRACT.md "Alerts"): one record per alert status change.

Consumers keep the latest record per `alert_id`, so the id must be a pure function
of what the alert is about (type, subject, stage, visit, deadline) and never of
when or where it was computed: re-runs, restarts and extra workers then converge
on the same ids instead of duplicating alerts.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from schemas.common import (
    MAX_SAFE_INTEGER,
    DerivedUtcDatetime,
    Identifier,
    SafeJson,
    StageName,
    format_utc,
)
from schemas.plan import Tier


class AlertType(StrEnum):
    """The alert types of RULES.md: four obligations, then the other alerts."""

    START_OVERDUE = "start_overdue"
    STAGE_OVERDUE = "stage_overdue"
    HANDOFF_OVERDUE = "handoff_overdue"
    ORDER_OVERDUE = "order_overdue"
    ORDER_AT_RISK = "order_at_risk"
    QUANTITY_LOSS = "quantity_loss"
    QC_REJECTED = "qc_rejected"
    MISSING_SCAN = "missing_scan"
    OUT_OF_SEQUENCE = "out_of_sequence"
    UNIT_DOWN = "unit_down"
    UNIT_DEGRADED = "unit_degraded"
    ORDER_DISRUPTED = "order_disrupted"


UNIT_ALERT_TYPES = frozenset({AlertType.UNIT_DOWN, AlertType.UNIT_DEGRADED})
"""Alerts whose subject is a unit: `order_id` is null and `unit_id` is the subject."""


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    RETRACTED = "retracted"


def _seconds(value: float) -> float | int:
    # Whole seconds print as integers (`14400`, not `14400.0`), as in the examples.
    return int(value) if float(value).is_integer() else value


Seconds = Annotated[float, Field(allow_inf_nan=False), PlainSerializer(_seconds, when_used="json")]
"""A duration; finite (CONTRACT.md v1.2: `NaN`, `Infinity` and a literal beyond a
64-bit float such as `1e309` are invalid). A non-finite lateness once passed here and
broke every consumer that does arithmetic on it (the notifier's message builders)."""

SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
"""An integer within +-2^53 (CONTRACT.md v1.2)."""


class AlertCustomer(BaseModel):
    """The customer as known when the alert was published (unknown = standard, no name)."""

    model_config = ConfigDict(frozen=True)

    customer_id: Identifier
    name: str | None = None
    tier: Tier = "standard"


class AlertCause(BaseModel):
    """The unit downtime that explains a breach."""

    model_config = ConfigDict(frozen=True)

    unit_id: Identifier
    reason: Annotated[str, StringConstraints(max_length=64)] | None = None
    """A unit-status reason (`DowntimeReason`), bounded as any text a consumer stores."""
    since: DerivedUtcDatetime


AlertId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""`alert_id()`: hex SHA-256. Bounded, so a record on the alerts topic that is not the
engine's cannot carry an unbounded key into the sink's and the notifier's state."""


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True)

    alert_id: AlertId
    type: AlertType
    severity: Severity
    status: AlertStatus
    order_id: Identifier | None = None
    unit_id: Identifier | None = None
    stage: StageName | None = None
    visit: SafeInt | None = None
    deadline: DerivedUtcDatetime
    detected_at: DerivedUtcDatetime
    fulfilled_at: DerivedUtcDatetime | None = None
    lateness_s: Seconds | None = None
    customer: AlertCustomer | None = None
    cause: AlertCause | None = None
    details: dict[str, SafeJson] = Field(default_factory=dict)
    """Type-specific facts; any JSON, its numbers finite and integers within +-2^53."""

    @property
    def subject(self) -> str:
        """The unit for unit alerts, else the order: the second part of the id."""
        if self.type in UNIT_ALERT_TYPES:
            return self.unit_id or ""
        return self.order_id or ""

    @property
    def units(self) -> frozenset[str]:
        """The units the alert is about: its own and the one whose downtime caused it
        (an order's breach at another unit's stage, explained by that unit's downtime)."""
        return frozenset(u for u in (self.unit_id, self.cause and self.cause.unit_id) if u)

    def same_content(self, other: Alert) -> bool:
        """Field-by-field equality, independent of how either copy was built."""
        return self.model_dump() == other.model_dump()


def alert_id(
    type: AlertType | str, subject: str, stage: str | None, visit: int | None, deadline: datetime
) -> str:
    """hex SHA-256 of `type|subject|stage|visit|deadline` (null as the empty string)."""
    parts = (
        str(type),
        subject,
        "" if stage is None else stage,
        "" if visit is None else str(visit),
        format_utc(deadline),
    )
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()
