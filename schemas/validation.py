"""Where input bytes become a model or a rejection - and nothing else does.

No Kafka here: agents, the HTTP gateway and `replay` call these pure
functions and turn a `RecordRejected` into a `DeadLetter`. The happy path is a
single `model_validate_json` (parsing and validation in pydantic-core, no
intermediate dict), which matters for the 20k events/s per core goal; the
error classification reads pydantic's own error types, so it agrees with what
the parser saw.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, cast

from pydantic import BaseModel, ValidationError

from schemas.customers import TOMBSTONE, Customer, Tombstone
from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.orders import OrderRecord
from schemas.replay import ReplayLine
from schemas.scans import QC_STAGE_CONTEXT_KEY, ScanEvent
from schemas.unit_status import UnitStatus

__all__ = [
    "MODEL_BY_TOPIC",
    "ErrorDetail",
    "InputRecord",
    "ReasonCode",
    "RecordRejected",
    "decode_input",
    "decode_replay_line",
    "errors_from",
]

InputRecord = ScanEvent | UnitStatus | OrderRecord | Customer | Tombstone

MODEL_BY_TOPIC: Final[dict[str, type[BaseModel]]] = {
    "orders": OrderRecord,
    "crm.customers": Customer,
    "scans": ScanEvent,
    "unit-status": UnitStatus,
}
"""Logical input topic -> its record model (CONTRACT.md, Inputs)."""

_TOMBSTONE_TOPICS: Final = frozenset({"crm.customers"})
_MAX_MSG = 500


class RecordRejected(Exception):
    """An input record that breaks the contract: goes to the dead letters, never crashes."""

    def __init__(self, reason_code: ReasonCode, errors: list[ErrorDetail]) -> None:
        self.reason_code = reason_code
        self.errors = errors
        first = f": {errors[0].loc or '<record>'}: {errors[0].msg}" if errors else ""
        super().__init__(f"{reason_code.value}{first}")


def decode_input(topic: str, raw_value: bytes | None, *, qc_stage: str) -> InputRecord:
    """Validate the value of one record of a logical input `topic`.

    Raises `RecordRejected` for any bad input (`not_json`, `not_object`,
    `validation_failed`), and `ValueError` for a topic that is not an input
    topic: that is a wiring bug, not bad data, and must fail loudly.
    A null value (Kafka null, or the JSON literal `null`) on `crm.customers` is
    a tombstone; elsewhere it is `not_object`.
    """
    model = MODEL_BY_TOPIC.get(topic)
    if model is None:
        raise ValueError(f"not an input topic: {topic!r}")
    if raw_value is None:
        if topic in _TOMBSTONE_TOPICS:
            return TOMBSTONE
        raise RecordRejected(
            ReasonCode.NOT_OBJECT, [ErrorDetail(loc="", msg="value is null", type="null_value")]
        )
    try:
        record = model.model_validate_json(raw_value, context={QC_STAGE_CONTEXT_KEY: qc_stage})
    except ValidationError as exc:
        rejection = _rejection(exc, ReasonCode.VALIDATION_FAILED)
        if (
            rejection.reason_code is ReasonCode.NOT_OBJECT
            and topic in _TOMBSTONE_TOPICS
            and raw_value.strip() == b"null"
        ):
            return TOMBSTONE
        raise rejection from None
    return cast(InputRecord, record)


def decode_replay_line(raw_line: bytes | str) -> ReplayLine:
    """Validate one scenario line (CONTRACT.md, replay files).

    `not_json` for a line that does not parse (a truncated last line, say),
    `bad_replay_line` for JSON that is not a `{topic, key?, value}` object.
    """
    try:
        return ReplayLine.model_validate_json(raw_line)
    except ValidationError as exc:
        raise _rejection(exc, ReasonCode.BAD_REPLAY_LINE) from None


def errors_from(exc: ValidationError) -> list[ErrorDetail]:
    """pydantic's errors as dead-letter details (dotted `loc`, bounded `msg`)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return [_detail(error["loc"], error["msg"], error["type"]) for error in errors]


def _rejection(exc: ValidationError, otherwise: ReasonCode) -> RecordRejected:
    """Classify by pydantic's own root error: bad JSON (incl. bad UTF-8) or not an object."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if len(errors) == 1 and not errors[0]["loc"]:
        kind = errors[0]["type"]
        if kind == "json_invalid":
            code = ReasonCode.NOT_JSON
        elif kind in ("model_type", "model_attributes_type"):
            code = ReasonCode.NOT_OBJECT if otherwise is ReasonCode.VALIDATION_FAILED else otherwise
        else:
            code = otherwise
    else:
        code = otherwise
    return RecordRejected(code, errors_from(exc))


def _detail(loc: Iterable[int | str], msg: str, kind: str) -> ErrorDetail:
    text = " ".join(msg.split())
    if len(text) > _MAX_MSG:
        text = text[: _MAX_MSG - 3] + "..."
    return ErrorDetail(loc=".".join(str(part) for part in loc), msg=text, type=kind)
