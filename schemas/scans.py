"""Scan events posted by stage units, topic `scans` (CONTRACT.md, input 3).

Which stage is the QC stage is configuration (the SLA plan's `qc_stage`), so
the `rejected`-only-at-QC rule reads it from the pydantic validation context:

    ScanEvent.model_validate_json(raw, context={"qc_stage": plan.qc_stage})

Without a context the default plan's `quality_check` applies.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from schemas.common import MAX_SAFE_INTEGER, Identifier, StageName, UtcDatetime

DEFAULT_QC_STAGE = "quality_check"
QC_STAGE_CONTEXT_KEY = "qc_stage"

MAX_QUANTITY = 1e9
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_TEXT = 256

LotId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:/-]{1,64}$")]
"""Like an identifier, plus `/` which GS1 lot numbers (EPCIS `lgtin`) may carry."""

AttributeKey = Annotated[str, Field(min_length=1, max_length=MAX_ATTRIBUTE_KEY)]
AttributeScalar = str | bool | int | float | None


def attribute_value(value: Any) -> AttributeScalar:
    """One clear error per bad value, instead of one per member of a union.

    Python input, and on the JSON path the values pydantic-core does not take
    natively (see `_AttributeValueSchema`); on the error path it also explains
    a refused JSON value (`schemas.validation` translates `ATTRIBUTE_ERROR`).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise PydanticCustomError(
                "unsafe_integer",
                "integers must lie within +-2^53 ({limit}); send larger ones as strings",
                {"limit": MAX_SAFE_INTEGER},
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("attribute_not_finite", "attribute numbers must be finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_TEXT:
            raise PydanticCustomError(
                "attribute_too_long",
                "attribute text is longer than {max_length} characters",
                {"max_length": MAX_ATTRIBUTE_TEXT},
            )
        return value
    raise PydanticCustomError(
        "attribute_type", "attribute values are strings, numbers, booleans or null (flat)"
    )


ATTRIBUTE_ERROR = "attribute_invalid"
"""Marker error type of a refused attribute value in JSON input; translated to
`attribute_value`'s own error by `schemas.validation`."""


class _AttributeValueSchema:
    """JSON mode: native for the usual values (text up to 256 characters, booleans,
    null, integers within +-2^53, finite floats within +-2^53); anything else is
    `attribute_value`'s. Python mode: `attribute_value`."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        fallback = core_schema.no_info_plain_validator_function(attribute_value)
        native = core_schema.union_schema(
            [
                core_schema.str_schema(strict=True, max_length=MAX_ATTRIBUTE_TEXT),
                core_schema.bool_schema(strict=True),
                core_schema.none_schema(),
                core_schema.int_schema(strict=True, ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER),
                core_schema.float_schema(
                    strict=True, allow_inf_nan=False, gt=-MAX_SAFE_INTEGER, lt=MAX_SAFE_INTEGER
                ),
                fallback,
            ],
            mode="left_to_right",
            custom_error_type=ATTRIBUTE_ERROR,
            custom_error_message="attribute values are strings, numbers, booleans or null (flat)",
        )
        return core_schema.json_or_python_schema(json_schema=native, python_schema=fallback)


AttributeValue = Annotated[
    AttributeScalar,
    _AttributeValueSchema,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_ATTRIBUTE_TEXT},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "null"},
            ]
        }
    ),
]
Attributes = Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)]
"""Free-form station data (shade, gauge, ...): flat and bounded, because it is
stored per event and must not let one producer blow up state or ClickHouse rows."""


class ScanAction(StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    REJECTED = "rejected"


class Uom(StrEnum):
    KG = "kg"
    M = "m"
    PCS = "pcs"


class ScanEvent(BaseModel):
    """Work on an order started, completed or was rejected at one station."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Identifier = Field(description="Idempotency key: the first valid record wins.")
    order_id: Identifier
    stage: StageName
    action: ScanAction
    unit_id: Identifier
    event_time: UtcDatetime
    quantity: (
        Annotated[float, Field(ge=0, le=MAX_QUANTITY, strict=True, allow_inf_nan=False)] | None
    ) = None
    uom: Uom | None = None
    lot_id: LotId | None = None
    attributes: Attributes | None = None

    @field_validator("action")
    @classmethod
    def _rejected_only_at_qc(cls, action: ScanAction, info: ValidationInfo) -> ScanAction:
        """RULES.md: `rejected` ends a QC visit, so anywhere else it is invalid input.

        A field validator (not a model one) so the error's location is `action`;
        `stage` is declared first, hence already in `info.data` when valid.
        """
        if action is not ScanAction.REJECTED:
            return action
        qc_stage = qc_stage_from(info)
        stage = info.data.get("stage")
        if stage is not None and stage != qc_stage:
            raise PydanticCustomError(
                "rejected_outside_qc",
                "rejected is only valid at the QC stage ({qc_stage})",
                {"qc_stage": qc_stage},
            )
        return action


def qc_stage_from(info: ValidationInfo) -> str:
    """The plan's QC stage from the validation context, else the default plan's."""
    context = info.context
    if isinstance(context, dict):
        value = context.get(QC_STAGE_CONTEXT_KEY)
        if isinstance(value, str):
            return value
    return DEFAULT_QC_STAGE
