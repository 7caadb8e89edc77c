"""The engine's output records as the sink reads them: checked in pydantic-core only.

Alerts, order snapshots, dead letters and the delivery log are the project's
own records, already validated by the contract models when they were built.
The sink still rejects a malformed one (not JSON, a missing field, a wrong
type, a naive timestamp, a number no column holds) - counted and skipped, never
a crash - but with the cheapest check that guarantees every value fits its
ClickHouse column: `TypedDict`s of plain types whose constraints run in
pydantic-core (no Python validators), about 4-6x cheaper per record than the
contract models. Field names and enums are the contract's own
(`schemas.alerts`, `schemas.order_state`, `schemas.dead_letter`,
`sinks.webhooks.records`); `tests/sinks/test_sink_wire.py` checks that every
record the contract models produce passes, and keeps the two from drifting.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, NotRequired, TypeAlias, TypeVar

from pydantic import AwareDatetime, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from schemas.alerts import AlertStatus, AlertType, Severity
from schemas.dead_letter import DeadLetterSource, ReasonCode
from schemas.order_state import OrderStatus
from sinks.clickhouse.mapping import RecordInvalid


def _values(enum: type[StrEnum]) -> Any:
    """A contract enum as a `Literal` of its values: checked in pydantic-core, and the
    decoded value is the plain string a column takes (no enum member, no `.value`)."""
    return Literal[tuple(member.value for member in enum)]


if TYPE_CHECKING:
    AlertTypeValue: TypeAlias = str
    SeverityValue: TypeAlias = str
    AlertStatusValue: TypeAlias = str
    OrderStatusValue: TypeAlias = str
    ReasonCodeValue: TypeAlias = str
    SourceKindValue: TypeAlias = str
else:
    AlertTypeValue = _values(AlertType)
    SeverityValue = _values(Severity)
    AlertStatusValue = _values(AlertStatus)
    OrderStatusValue = _values(OrderStatus)
    ReasonCodeValue = _values(ReasonCode)
    # the contract's own Literal: a kind added there (as `import` was) is one here too
    SourceKindValue = DeadLetterSource.model_fields["kind"].annotation

UInt16 = Annotated[int, Field(ge=0, le=0xFFFF)]
UInt32 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF)]
UInt64 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]

_CONFIG = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)
"""`allow_inf_nan=False`: numbers a 64-bit float holds (CONTRACT v1.2); the notifier
refuses a non-finite `lateness_s` too, so the two never disagree on an alert."""


class WireCustomer(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    customer_id: str
    name: NotRequired[str | None]
    tier: NotRequired[str]


class WireCause(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    unit_id: str
    reason: NotRequired[str | None]
    since: AwareDatetime


class WireAlert(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    alert_id: str
    type: AlertTypeValue
    severity: SeverityValue
    status: AlertStatusValue
    order_id: NotRequired[str | None]
    unit_id: NotRequired[str | None]
    stage: NotRequired[str | None]
    visit: NotRequired[UInt16 | None]
    deadline: AwareDatetime
    detected_at: AwareDatetime
    fulfilled_at: NotRequired[AwareDatetime | None]
    lateness_s: NotRequired[float | None]
    customer: NotRequired[WireCustomer | None]
    cause: NotRequired[WireCause | None]
    details: NotRequired[dict[str, Any]]


class WireVisit(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    stage: str
    visit: UInt16
    unit_id: str
    started_at: NotRequired[AwareDatetime | None]
    ended_at: NotRequired[AwareDatetime | None]
    outcome: NotRequired[Literal["completed", "rejected"] | None]
    quantity: NotRequired[float | None]
    uom: NotRequired[str | None]


class WireOrderState(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    order_id: str
    customer: NotRequired[WireCustomer | None]
    product: NotRequired[str | None]
    quantity: NotRequired[float | None]
    placed_at: NotRequired[AwareDatetime | None]
    due_at: NotRequired[AwareDatetime | None]
    cancelled_at: NotRequired[AwareDatetime | None]
    stage: NotRequired[str | None]
    visit: NotRequired[UInt16 | None]
    status: OrderStatusValue
    visits: NotRequired[list[WireVisit]]
    eta: NotRequired[AwareDatetime | None]
    open_alert_ids: NotRequired[list[str]]
    version: NotRequired[UInt64]
    as_of: AwareDatetime


class WireErrorDetail(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    loc: str
    msg: str
    type: str


class WireSource(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    kind: SourceKindValue
    topic: NotRequired[str | None]
    partition: NotRequired[Int32 | None]
    offset: NotRequired[Int64 | None]
    request_id: NotRequired[str | None]
    file: NotRequired[str | None]
    line: NotRequired[UInt32 | None]
    index: NotRequired[UInt32 | None]


class WireDeadLetter(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    dead_letter_id: str
    source: WireSource
    key_b64: NotRequired[str | None]
    value_b64: str | None
    errors: list[WireErrorDetail]
    reason: str
    reason_code: ReasonCodeValue
    failed_at: AwareDatetime
    truncated: NotRequired[bool]
    original_size: NotRequired[UInt64 | None]
    original_sha256: NotRequired[str | None]
    original_key_size: NotRequired[UInt64 | None]
    original_key_sha256: NotRequired[str | None]


class WireDeliveryLog(TypedDict):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    webhook_id: str
    alert_id: str
    alert_status: str
    alert_type: str
    endpoint: str
    url_host: str
    outcome: Literal["delivered", "gave_up", "silenced"]
    attempts: UInt16
    status_codes: list[UInt16]
    last_error: NotRequired[str]
    first_attempt_at: AwareDatetime
    finished_at: AwareDatetime
    latency_ms: float


T = TypeVar("T")


class WireDecoder(Generic[T]):
    """`decode(raw) -> T` in pydantic-core; otherwise `RecordInvalid` naming the first
    field at fault and why (the notifier's reason for the same record says as much),
    never echoing the value."""

    def __init__(self, shape: type[T]) -> None:
        self.name = shape.__name__.removeprefix("Wire")
        self._adapter: TypeAdapter[T] = TypeAdapter(shape)

    def decode(self, raw: bytes | None) -> T:
        if raw is None:
            raise RecordInvalid("null value")
        try:
            return self._adapter.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "<value>"
            more = exc.error_count() - 1
            raise RecordInvalid(
                f"{self.name}: {where}: {first['msg']}" + (f" (and {more} more)" if more else "")
            ) from None


ALERT = WireDecoder(WireAlert)
ORDER_STATE = WireDecoder(WireOrderState)
DEAD_LETTER = WireDecoder(WireDeadLetter)
DELIVERY_LOG = WireDecoder(WireDeliveryLog)
