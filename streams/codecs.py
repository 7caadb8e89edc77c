"""faust codecs that hand agents validated models (or a rejection), never raw dicts.

Decoding never raises: a record that breaks the contract decodes to `Rejected`
carrying its bytes and the reasons, so the agent dead-letters it and moves on
(a codec error would make faust skip the record: silently dropped data); so does a
record whose check raised (a bug: `processing_error`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from faust.serializers.codecs import Codec
from faust.serializers.schemas import Schema
from faust.types import AppT
from faust.types.tuples import Message

from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.plan import SlaPlan
from schemas.validation import InputRecord, RecordRejected, decode_input
from streams.engine.errors import error_text

log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    raw: bytes | None
    reason_code: ReasonCode
    errors: list[ErrorDetail]


class InputCodec(Codec):
    """Validates one contract input topic (`scans`, `orders`, ...) against the SLA plan.

    The codec sees only the value: the key check (`schemas.validation.check_key`)
    is the agent's.
    """

    def __init__(self, topic: str, plan: SlaPlan, **kwargs: Any) -> None:
        super().__init__(topic=topic, plan=plan, **kwargs)
        self.topic = topic
        self.plan = plan

    def _loads(self, s: bytes) -> InputRecord | Rejected:
        try:
            return decode_input(self.topic, s, plan=self.plan)
        except RecordRejected as exc:
            return Rejected(s, exc.reason_code, exc.errors)
        except Exception as exc:  # a bug of ours (a validator's TypeError): data all the same
            # faust's registry once wrapped it in a decode error and skipped the record
            # (silently dropped); out of `InputSchema` it would end the worker's fetch loop.
            # CONTRACT v1.2: a record whose handling raises is a `processing_error` letter.
            text = error_text(exc)
            log.error("processing_error", topic=self.topic, error=text, exc_info=exc)
            detail = ErrorDetail(loc="", msg=text, type=type(exc).__name__)
            return Rejected(s, ReasonCode.PROCESSING_ERROR, [detail])

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, Rejected):
            return obj.raw or b""
        data: bytes = obj.model_dump_json().encode()
        return data


class InputSchema(Schema[Any, Any]):
    """An input topic's schema: the key's bytes as they came, the value through its
    `InputCodec` called directly.

    faust's `Schema.loads_key` / `loads_value` go through the app's serializer
    registry for every record: the codec looked up by name, the bytes through
    `Codec.loads`, then `Model._maybe_reconstruct` (a faust model's namespace
    looked for in what came out), each inside a `try` that wraps a failure in a
    decode error. For the "raw" key serializer and an `InputCodec` value (a
    pydantic record or `Rejected`, never a mapping of faust's, and never an
    exception) that gives back what this gives, at ~9 µs more a record (27 against 18
    µs a scan decoded; docs/performance-engine-history.md, "Engine plumbing per record").
    faust's compiled decoder hands an empty value (a tombstone) on after the key's
    and before the value's is called (`allow_empty`), as it did.

    The codec raises nothing (a bug's exception is a `processing_error` rejection,
    `InputCodec._loads`), so faust's wrapping of one in `ValueDecodeError` (after which
    it acked the record and dropped it unseen) is not needed here.
    """

    def __init__(self, codec: InputCodec) -> None:
        super().__init__(key_serializer="raw", value_serializer=codec, allow_empty=True)
        self.codec = codec

    def loads_key(self, app: AppT, message: Message, **_: Any) -> Any:
        return message.key

    def loads_value(self, app: AppT, message: Message, **_: Any) -> Any:
        value = message.value
        return None if value is None else self.codec.loads(value)
