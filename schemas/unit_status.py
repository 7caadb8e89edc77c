"""Unit status records, topic `unit-status` (CONTRACT.md, input 4).

Each `down` or `degraded` record opens a downtime of its unit that the first
later `up` closes (RULES.md, the facts); `stage`, `reason` and
`expected_up_at` are informational and validated when present.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.common import Identifier, StageName, UtcDatetime


class UnitState(StrEnum):
    UP = "up"
    DOWN = "down"
    DEGRADED = "degraded"


class DowntimeReason(StrEnum):
    MACHINE_BREAKDOWN = "machine_breakdown"
    POWER_OUTAGE = "power_outage"
    MATERIAL_SHORTAGE = "material_shortage"
    LABOUR_SHORTAGE = "labour_shortage"
    QUALITY_HOLD = "quality_hold"
    CARRIER_DELAY = "carrier_delay"
    OTHER = "other"


class UnitStatus(BaseModel):
    """One status change reported by (or for) a stage unit; `event_id` de-duplicates."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Identifier
    unit_id: Identifier
    stage: StageName | None = None
    status: UnitState
    reason: DowntimeReason | None = None
    event_time: UtcDatetime
    expected_up_at: UtcDatetime | None = None
