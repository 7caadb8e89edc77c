"""The `order-state` topic (CONTRACT.md "Order state"): a snapshot per order change.

Sinks upsert these rows (ClickHouse `ReplacingMergeTree(version)`), so `version`
must grow with every snapshot of an order; it is assigned by the engine that owns
the order's table, not derived here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.alerts import AlertCustomer
from schemas.common import DerivedUtcDatetime, Identifier


class OrderStatus(StrEnum):
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    BREACHED = "breached"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


Outcome = Literal["completed", "rejected"] | None


class VisitState(BaseModel):
    """One pass of the order through one stage (RULES.md "Visits")."""

    model_config = ConfigDict(frozen=True)

    stage: str
    visit: int
    unit_id: Identifier
    started_at: DerivedUtcDatetime | None = None
    ended_at: DerivedUtcDatetime | None = None
    outcome: Outcome = None
    quantity: float | None = None
    uom: str | None = None


class OrderState(BaseModel):
    model_config = ConfigDict(frozen=True)

    order_id: Identifier
    customer: AlertCustomer | None = None
    product: str | None = None
    quantity: float | None = None
    placed_at: DerivedUtcDatetime | None = None
    due_at: DerivedUtcDatetime | None = None
    cancelled_at: DerivedUtcDatetime | None = None
    stage: str | None = None
    visit: int | None = None
    status: OrderStatus
    visits: list[VisitState] = Field(default_factory=list)
    eta: DerivedUtcDatetime | None = None
    open_alert_ids: list[str] = Field(default_factory=list)
    version: int = 0
    as_of: DerivedUtcDatetime
