"""Order desk records, topic `orders` (CONTRACT.md, input 1).

One flat model for the three ops rather than a tagged union: the order fold
(RULES.md, "the order record") treats `created` and `updated` alike - fields
present overwrite, fields absent are unchanged - so consumers want one shape
with `None` meaning "not in this record". The per-op required fields are
checked by a model validator and spelled out in the JSON Schema.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.common import Identifier, StageName, UtcDatetime, format_utc
from schemas.unit_status import plan_stages_from

MAX_QUANTITY = 1e9
"""A sanity bound, far above any real order, that keeps float arithmetic exact
enough and rejects obviously corrupted numbers."""

MAX_ROUTE_STAGES = 64

Quantity = Annotated[float, Field(gt=0, le=MAX_QUANTITY, strict=True, allow_inf_nan=False)]
"""Strict: a JSON number only. `"500"` or `true` is a producer bug, not a quantity."""

Product = Annotated[str, Field(min_length=1, max_length=128)]
Route = Annotated[
    list[StageName],
    Field(min_length=1, max_length=MAX_ROUTE_STAGES, json_schema_extra={"uniqueItems": True}),
]


class OrderOp(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    CANCELLED = "cancelled"


UPDATABLE_FIELDS: tuple[str, ...] = ("due_at", "quantity", "customer_id", "route")
"""What an `updated` may change (CONTRACT.md). Other fields it carries are
validated but not applied: `placed_at` anchors `start_within` and must not move."""

_REQUIRED: dict[OrderOp, tuple[str, ...]] = {
    OrderOp.CREATED: ("customer_id", "quantity", "placed_at", "due_at"),
    OrderOp.UPDATED: ("event_time",),
    OrderOp.CANCELLED: ("event_time",),
}


def _per_op_required(schema: dict[str, Any]) -> None:
    """Spell the per-op required fields out in the JSON Schema (if/then)."""
    schema["allOf"] = [
        {
            "if": {"properties": {"op": {"const": op.value}}, "required": ["op"]},
            "then": {"required": list(fields)},
        }
        for op, fields in _REQUIRED.items()
    ]


class OrderRecord(BaseModel):
    """A `created`, `updated` or `cancelled` record of one order.

    After validation a `created` record always has `event_time` (it defaults
    to `placed_at`), so every record can be ordered by (`event_time`, offset).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra=_per_op_required)

    op: OrderOp
    order_id: Identifier
    customer_id: Identifier | None = None
    product: Product | None = None
    quantity: Quantity | None = None
    placed_at: UtcDatetime | None = None
    due_at: UtcDatetime | None = None
    route: Route | None = Field(
        default=None, description="Stages in order; absent = the plan's default route."
    )
    event_time: UtcDatetime | None = Field(
        default=None,
        description="When the desk made the change; defaults to placed_at for created.",
    )

    @field_validator("route")
    @classmethod
    def _route_of_the_plan(cls, route: list[str] | None, info: ValidationInfo) -> list[str] | None:
        """A repeated stage would make visit numbering ambiguous (RULES.md, Visits); a
        stage the plan does not know (`"spinning"`) is invalid input, as on a unit
        status (CONTRACT v1.2): the engine had no budget for it and refused the record
        later, as if its `due_at` were wrong."""
        if route is not None and len(set(route)) != len(route):
            repeated = sorted(stage for stage, n in Counter(route).items() if n > 1)
            raise PydanticCustomError(
                "route_repeats_stage",
                "route repeats stage {stages}",
                {"stages": ", ".join(repeated)},
            )
        stages = plan_stages_from(info)
        unknown = [s for s in route or () if stages is not None and s not in stages]
        if unknown:
            raise PydanticCustomError(
                "unknown_stage",
                "route names {stages}, not a stage of the SLA plan",
                {"stages": ", ".join(repr(s) for s in unknown)},
            )
        return route

    @model_validator(mode="after")
    def _check_op(self) -> Self:
        missing = [name for name in _REQUIRED[self.op] if getattr(self, name) is None]
        if missing:
            raise PydanticCustomError(
                "missing_for_op",
                "{op} order needs {fields}",
                {"op": self.op.value, "fields": ", ".join(missing)},
            )
        placed, due = self.placed_at, self.due_at
        if placed is not None and due is not None and due <= placed:
            raise PydanticCustomError(
                "due_not_after_placed",
                "due_at {due_at} is not after placed_at {placed_at}",
                {"due_at": format_utc(due), "placed_at": format_utc(placed)},
            )
        if self.event_time is None and self.placed_at is not None:
            # The model is frozen; this is the one write, during validation.
            object.__setattr__(self, "event_time", self.placed_at)
        return self

    def changes(self) -> dict[str, Any]:
        """The fields this record sets in the order fold (absent ones stay unchanged)."""
        if self.op is OrderOp.CANCELLED:
            return {}
        names = tuple(OrderRecord.model_fields) if self.op is OrderOp.CREATED else UPDATABLE_FIELDS
        return {
            name: getattr(self, name)
            for name in names
            if name not in ("op", "order_id", "event_time") and getattr(self, name) is not None
        }


def check_update_against(placed_at: datetime, update: OrderRecord) -> str | None:
    """Why `update` cannot apply to an order placed at `placed_at`, or None if it can.

    RULES.md: an `updated` whose `due_at` is not after `placed_at` is a dead
    letter. The model can only check that when both are in one record; the
    stream processor knows the stored `placed_at` and calls this (reason code
    `bad_update`). Pure, so it is tested without Kafka.
    """
    if update.op is not OrderOp.UPDATED or update.due_at is None:
        return None
    if update.due_at <= placed_at:
        return f"due_at {format_utc(update.due_at)} is not after placed_at {format_utc(placed_at)}"
    return None
