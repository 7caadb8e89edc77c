"""What a simulation run is made of: one frozen, validated configuration.

Everything that changes the generated records lives here (and nothing that
only changes *where* they go), so "same config -> same bytes" is checkable:
the seed, the calendar, the volume and every anomaly rate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.common import MAX_TIME, MIN_TIME, format_utc

DEFAULT_START: Final = datetime(2027, 3, 1, tzinfo=UTC)
"""Fixed so a scenario file never depends on the day it was generated."""

Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class AnomalyRates(BaseModel):
    """Per-order (or per-record, where noted) probabilities of each injected anomaly.

    The defaults are tuned so that a run of 3 days x 40 orders/day contains
    every alert type of RULES.md while most orders still flow on time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    late_start: Rate = 0.05
    """First scan after `start_within` (start_overdue)."""
    late_stage: Rate = 0.10
    """One visit runs past its stage duration (stage_overdue)."""
    missed_handoff: Rate = 0.06
    """One gap between visits longer than `handoff` (handoff_overdue)."""
    qc_rejection: Rate = 0.08
    """QC rejects once (sometimes twice): rework at `rework_stage`, QC again (qc_rejected)."""
    quantity_loss: Rate = 0.05
    """One completed visit loses more than the tolerance (quantity_loss)."""
    missing_scan: Rate = 0.05
    """A stage's scans (or just its `started`) are never sent (missing_scan)."""
    out_of_sequence: Rate = 0.04
    """A stray scan of an earlier stage, or one after completion (out_of_sequence)."""
    tight_due: Rate = 0.06
    """`due_at` shorter than the plan's budget: the order is at risk from its first scan."""
    overdue: Rate = 0.03
    """`due_at` far too short: the order completes after it (order_overdue)."""
    stall: Rate = 0.015
    """The order stops mid-stage and is never finished."""
    update: Rate = 0.04
    """The desk moves `due_at` (an `updated` record)."""
    cancel: Rate = 0.02
    """The desk cancels the order mid-flow."""
    duplicate: Rate = 0.03
    """Per scan: re-sent later with the same `event_id` (a third with a changed payload)."""
    unit_incident: Rate = 0.06
    """Per unit and day: a downtime (`down`, a third `degraded`) followed by `up`."""
    crm_update: Rate = 0.3
    """Per day: one customer record changes (tier, account manager)."""
    crm_tombstone: Rate = 0.08
    """Per day: one customer is deleted (a tombstone)."""


ORDER_FATES: Final = (
    "late_start",
    "late_stage",
    "missed_handoff",
    "qc_rejection",
    "quantity_loss",
    "missing_scan",
    "out_of_sequence",
    "tight_due",
    "overdue",
    "stall",
    "update",
    "cancel",
)
"""Per-order anomalies, in the (fixed) order their dice are rolled."""


MAX_CUSTOMERS = 1_000_000
"""The customer pool is built up front: 10^8 grew the command to gigabytes before a record."""

LAST_START = MAX_TIME - timedelta(days=365)
"""Orders placed before it finish (their records timed) before the contract's 2100 limit."""


class SimConfig(BaseModel):
    """One simulation: seed, calendar, volume and anomaly mix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 1
    start: datetime = DEFAULT_START
    days: int | None = Field(
        default=3, ge=1, le=36_500, description="Days on which orders are placed; None = endless."
    )
    orders_per_day: int = Field(default=40, ge=1, le=1_000_000)
    customers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CUSTOMERS,
        description="Customer pool size; None = scaled from orders_per_day.",
    )
    invalid_share: Rate = Field(
        default=0.01, description="Share of all records that are invalid (dead letters)."
    )
    id_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._:-]{0,16}$")
    anomalies: AnomalyRates = AnomalyRates()

    @field_validator("start")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("start must carry a UTC offset")
        value = value.astimezone(UTC).replace(microsecond=0)
        if not MIN_TIME <= value < LAST_START:
            raise ValueError(
                f"start must lie in [{format_utc(MIN_TIME)}, {format_utc(LAST_START)}): "
                "the contract's timestamps end in 2100 and a run's records come later"
            )
        return value

    @model_validator(mode="after")
    def _ends_in_the_contract_s_range(self) -> SimConfig:
        if self.days is not None and self.start + timedelta(days=self.days) >= LAST_START:
            raise ValueError(
                f"days: {self.days} days from {format_utc(self.start)} pass "
                f"{format_utc(LAST_START)} (records must stay before 2100)"
            )
        return self

    @property
    def customer_count(self) -> int:
        if self.customers is not None:
            return self.customers
        return max(12, min(500, self.orders_per_day))
