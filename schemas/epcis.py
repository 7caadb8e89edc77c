"""EPCIS 2.0 capture (CONTRACT.md, input 5): the mapping file and the document shape.

Factories that already speak GS1 EPCIS send `EPCISDocument`s instead of scan
events; which read point is which unit, and which business step means which
scan action, differs per site, so it is configuration (a YAML file, see
`../shared/spec/examples/epcis/mapping.yaml`), validated here at start-up: a
typo in the mapping would otherwise turn every event of a station into a dead
letter. Events stay plain dicts in the document model because each event is
mapped (or rejected with a reason) on its own; one bad event must not reject
its neighbours.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import re2
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from schemas.common import Identifier, StageName
from schemas.files import load_config_yaml, read_config_text
from schemas.scans import ScanAction, Uom

EventType = Literal[
    "ObjectEvent",
    "TransformationEvent",
    "AggregationEvent",
    "AssociationEvent",
    "TransactionEvent",
]
MAPPED_EVENT_TYPES = frozenset(
    {
        "ObjectEvent",
        "TransformationEvent",
        "AggregationEvent",
        "AssociationEvent",
        "TransactionEvent",
    }
)
EpcisAction = Literal["ADD", "OBSERVE", "DELETE"]

_CBV_PREFIXES: dict[str, tuple[str, ...]] = {
    "bizStep": (
        "urn:epcglobal:cbv:bizstep:",
        "https://ref.gs1.org/cbv/BizStep-",
        "https://gs1.org/voc/BizStep-",
        "cbv:BizStep-",
    ),
    "disposition": (
        "urn:epcglobal:cbv:disp:",
        "https://ref.gs1.org/cbv/Disp-",
        "https://gs1.org/voc/Disp-",
        "cbv:Disp-",
    ),
    "bizTransactionType": (
        "urn:epcglobal:cbv:btt:",
        "https://ref.gs1.org/cbv/BTT-",
        "https://gs1.org/voc/BTT-",
        "cbv:BTT-",
    ),
}


def cbv_name(vocabulary: str, value: str) -> str:
    """The bare CBV 2.0 name: `urn:epcglobal:cbv:bizstep:arriving` and
    `https://ref.gs1.org/cbv/BizStep-arriving` both read as `arriving`, as the
    EPCIS 2.0 JSON-LD context defines them to be the same term."""
    for prefix in _CBV_PREFIXES[vocabulary]:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


class ReadPointTarget(BaseModel):
    """The unit and stage a read point (`readPoint.id`, usually an SGLN) stands for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit_id: Identifier
    stage: StageName


class ActionRule(BaseModel):
    """Event type + `bizStep` (+ `disposition`, + EPCIS `action`) -> scan action; an absent key
    matches anything."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    event_type: EventType | None = None
    biz_step: str | None = Field(default=None, alias="bizStep")
    disposition: str | None = None
    epcis_action: EpcisAction | None = Field(
        default=None, description="The event's own `action` (ADD/OBSERVE/DELETE)."
    )
    action: ScanAction

    @field_validator("biz_step")
    @classmethod
    def _bare_biz_step(cls, value: str | None) -> str | None:
        return None if value is None else cbv_name("bizStep", value)

    @field_validator("disposition")
    @classmethod
    def _bare_disposition(cls, value: str | None) -> str | None:
        return None if value is None else cbv_name("disposition", value)

    def matches(
        self,
        event_type: str,
        biz_step: str | None,
        disposition: str | None,
        epcis_action: str | None = None,
    ) -> bool:
        return (
            (self.event_type is None or self.event_type == event_type)
            and (self.biz_step is None or self.biz_step == biz_step)
            and (self.disposition is None or self.disposition == disposition)
            and (self.epcis_action is None or self.epcis_action == epcis_action)
        )


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the mapping error, not a line on stderr


@lru_cache(maxsize=32)  # checked by the validator, then kept by the model: compiled once
def _linear_regex(pattern: str) -> Any:
    """`re2`, not `re`: the pattern is configuration but the text it runs over is hostile
    HTTP, and `re` backtracks (`^(?P<order_id>(a+)+)$` against 30 a's and a `!` held the
    gateway's event loop for minutes). RE2 matches in time linear in the text, and refuses
    what it cannot match that way."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"not an RE2 pattern ({reason}); lookaround and backreferences are not "
            "supported: patterns are matched in linear time"
        ) from None


class OrderIdRule(BaseModel):
    """Where the order id comes from: a business transaction of the given type."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    biz_transaction_type: str = Field(default="po", alias="bizTransaction_type")
    pattern: str = Field(
        description="RE2 regex matching the whole `bizTransaction`, with a named group "
        "`order_id`; matched in linear time, so no lookaround or backreferences."
    )
    _regex: Any = PrivateAttr()

    @field_validator("biz_transaction_type")
    @classmethod
    def _bare_type(cls, value: str) -> str:
        return cbv_name("bizTransactionType", value)

    @field_validator("pattern")
    @classmethod
    def _re2_with_order_group(cls, value: str) -> str:
        if "order_id" not in _linear_regex(value).groupindex:
            raise ValueError("the pattern needs a named group (?P<order_id>...)")
        return value

    def model_post_init(self, context: Any) -> None:
        self._regex = _linear_regex(self.pattern)

    def order_id_in(self, biz_transaction: str) -> str | None:
        """The `order_id` group when the whole value matches and the group is not empty."""
        match = self._regex.fullmatch(biz_transaction)
        order_id: str | None = match.group("order_id") if match is not None else None
        return order_id or None


class QuantityRule(BaseModel):
    """UN/ECE Rec. 20 unit codes -> contract `uom`; other codes yield no quantity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uom: dict[str, Uom] = Field(default_factory=dict)


class EpcisMapping(BaseModel):
    """The gateway's EPCIS -> scan mapping file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    read_points: dict[str, ReadPointTarget] = Field(min_length=1)
    actions: list[ActionRule] = Field(min_length=1, description="First matching rule wins.")
    order_id: OrderIdRule
    event_id: str = Field(
        default="eventID",
        description="Event field that becomes `event_id` (shortened when it does not fit, "
        "the CBV 2.0 event hash when absent; see schemas/epcis_hash.py).",
    )
    event_time: str = Field(
        default="eventTime", description="Event field that becomes `event_time` (kept as sent)."
    )
    quantity: QuantityRule | None = None

    def action_for(
        self,
        event_type: str,
        biz_step: str | None,
        disposition: str | None,
        epcis_action: str | None = None,
    ) -> ScanAction | None:
        for rule in self.actions:
            if rule.matches(event_type, biz_step, disposition, epcis_action):
                return rule.action
        return None


class EpcisMappingError(Exception):
    """A mapping file that cannot be used; the message names the offending key."""


def load_epcis_mapping(path: Path) -> EpcisMapping:
    """Read and validate a mapping file; errors name the key (`actions.2.action: ...`)."""
    try:
        data = load_config_yaml(read_config_text(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise EpcisMappingError(f"cannot read EPCIS mapping {path}: {exc}") from None
    if data is None:  # pydantic's words were "key '<file>': ... instance of EpcisMapping"
        raise EpcisMappingError(
            f"EPCIS mapping {path} is empty: deploy/gateway/epcis-mapping.example.yaml shows one"
        )
    if not isinstance(data, dict):
        raise EpcisMappingError(
            f"EPCIS mapping {path}: expected a mapping with `read_points:`, `actions:` "
            "and `order_id:`"
        )
    try:
        return EpcisMapping.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<file>"
        raise EpcisMappingError(f"EPCIS mapping {path}: key {where!r}: {first['msg']}") from None


class EpcisBody(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    event_list: list[Any] = Field(alias="eventList")


class EpcisDocument(BaseModel):
    """An `EPCISDocument` (JSON / JSON-LD); headers and extensions are ignored, `@context`
    only gives the namespaces of extension fields for the CBV 2.0 event hash."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    context: Any = Field(default=None, alias="@context")
    type: Literal["EPCISDocument"]
    schema_version: str | None = Field(default=None, alias="schemaVersion")
    epcis_body: EpcisBody = Field(alias="epcisBody")
