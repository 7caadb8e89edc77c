"""Unit status records, topic `unit-status` (CONTRACT.md, input 4).

Each `down` or `degraded` record opens a downtime of its unit that the first
later `up` closes (RULES.md, the facts); `stage`, `reason` and
`expected_up_at` are informational and validated when present.

`stage`, when present, must be a stage of the SLA plan (CONTRACT.md v1.2).
The plan is configuration, so its stages come from the validation context,
like the scans' QC stage (`schemas.validation.decode_input` passes both):

    UnitStatus.model_validate_json(raw, context={"stages": frozenset(plan.route)})

Without a context any well-spelled stage name passes.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from schemas.common import Identifier, StageName, UtcDatetime

STAGES_CONTEXT_KEY = "stages"


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

    @field_validator("stage")
    @classmethod
    def _stage_of_the_plan(cls, stage: str | None, info: ValidationInfo) -> str | None:
        """Another value (`"spinning"`) is invalid input, like any unknown enum value."""
        stages = plan_stages_from(info)
        if stage is not None and stages is not None and stage not in stages:
            raise PydanticCustomError(
                "unknown_stage", "'{stage}' is not a stage of the SLA plan", {"stage": stage}
            )
        return stage


def plan_stages_from(info: ValidationInfo) -> Collection[str] | None:
    """The plan's stages from the validation context, None when not given."""
    context = info.context
    if isinstance(context, dict):
        value = context.get(STAGES_CONTEXT_KEY)
        if isinstance(value, Collection) and not isinstance(value, str):
            return value
    return None
