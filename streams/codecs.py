"""faust codecs that hand agents validated models (or a rejection), never raw dicts.

Decoding never raises: a record that breaks the contract decodes to `Rejected`
carrying its bytes and the reasons, so the agent dead-letters it and moves on
(a codec error would make faust skip the record: silently dropped data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.serializers.codecs import Codec

from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.plan import SlaPlan
from schemas.validation import InputRecord, RecordRejected, decode_input


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

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, Rejected):
            return obj.raw or b""
        data: bytes = obj.model_dump_json().encode()
        return data
