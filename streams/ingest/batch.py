"""Judging the items of one request: accepted records and rejections (pure, no I/O).

The verdict of an item is whatever `decode_input` says for the item's bytes
on the endpoint's topic - the same function the stream engine applies to Kafka
records - so an item the gateway accepts is never dead-lettered downstream for
a contract reason, and vice versa.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import ValidationError

from schemas.customers import Tombstone
from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.epcis import EpcisDocument, EpcisMapping
from schemas.plan import SlaPlan
from schemas.validation import RecordRejected, decode_input, errors_from
from streams.ingest.auth import Role
from streams.ingest.body import UNPARSED, RawItem
from streams.ingest.epcis_map import Unmappable, map_event
from streams.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS


@dataclass(frozen=True)
class Endpoint:
    """An ingest route: which topic its items go to, their key, and who may post."""

    name: str
    path: str
    topic: str
    key_field: str
    roles: frozenset[Role]
    summary: str


ENDPOINTS: Final[dict[str, Endpoint]] = {
    e.name: e
    for e in (
        Endpoint(
            "scans", "/v1/scans", SCANS, "order_id", frozenset({Role.UNIT, Role.ADMIN}),
            "Post scan events (topic `scans`, key `order_id`).",
        ),
        Endpoint(
            "unit-status", "/v1/unit-status", UNIT_STATUS, "unit_id",
            frozenset({Role.UNIT, Role.ADMIN}),
            "Post unit status changes (topic `unit-status`, key `unit_id`).",
        ),
        Endpoint(
            "orders", "/v1/orders", ORDERS, "order_id", frozenset({Role.ORDERS, Role.ADMIN}),
            "Post order records (topic `orders`, key `order_id`).",
        ),
        Endpoint(
            "customers", "/v1/customers", CUSTOMERS, "customer_id",
            frozenset({Role.CRM, Role.ADMIN}),
            "Post CRM customer records (topic `crm.customers`, key `customer_id`).",
        ),
        Endpoint(
            "epcis", "/v1/epcis/capture", SCANS, "order_id", frozenset({Role.UNIT, Role.ADMIN}),
            "Capture an EPCIS 2.0 EPCISDocument; mapped events become scans.",
        ),
    )
}  # fmt: skip


@dataclass(slots=True)
class Verdict:
    """One item's fate; `key` is set exactly when it is accepted."""

    index: int
    value: bytes
    key: bytes | None = None
    unit_id: str | None = None
    reason_code: ReasonCode | None = None
    errors: list[ErrorDetail] | None = None

    @property
    def accepted(self) -> bool:
        return self.reason_code is None


def _claimed_unit(parsed: Any) -> str | None:
    if isinstance(parsed, dict):
        unit = parsed.get("unit_id")
        return unit if isinstance(unit, str) else None
    return None


def judge_value(index: int, value: bytes, topic: str, key_field: str, plan: SlaPlan) -> Verdict:
    try:
        record = decode_input(topic, value, plan=plan)
    except RecordRejected as exc:
        return Verdict(index, value, reason_code=exc.reason_code, errors=exc.errors)
    if isinstance(record, Tombstone):
        msg = "a null record (tombstone) is not accepted here: use DELETE /v1/customers/{id}"
        return Verdict(
            index,
            value,
            reason_code=ReasonCode.NOT_OBJECT,
            errors=[ErrorDetail(loc="", msg=msg, type="null_value")],
        )
    key = str(getattr(record, key_field)).encode()
    return Verdict(index, value, key=key, unit_id=getattr(record, "unit_id", None))


def judge_items(items: list[RawItem], endpoint: Endpoint, plan: SlaPlan) -> list[Verdict]:
    verdicts = []
    for item in items:
        verdict = judge_value(item.index, item.value, endpoint.topic, endpoint.key_field, plan)
        if not verdict.accepted:
            verdict.unit_id = _claimed_unit(item.json())
        verdicts.append(verdict)
    return verdicts


@dataclass(slots=True)
class EpcisVerdicts:
    """Per-event verdicts; `value` of an accepted one is the mapped scan, of a rejected
    one the event as sent (what an operator needs to fix the mapping and replay it)."""

    verdicts: list[Verdict]
    document_error: Verdict | None = None


def judge_epcis(
    document: RawItem, mapping: EpcisMapping, endpoint: Endpoint, plan: SlaPlan
) -> EpcisVerdicts:
    """Map and validate every event of an `EPCISDocument`.

    A body that is not an `EPCISDocument` is one rejected item (index 0), so
    partial mode dead-letters it like any other unusable input.
    """
    if document.parsed is UNPARSED:
        error = ErrorDetail(loc="", msg="the body is not JSON", type="json_invalid")
        return EpcisVerdicts(
            [], Verdict(0, document.value, None, None, ReasonCode.NOT_JSON, [error])
        )
    try:
        parsed = EpcisDocument.model_validate(document.parsed)
    except ValidationError as exc:
        return EpcisVerdicts(
            [],
            Verdict(0, document.value, None, None, ReasonCode.VALIDATION_FAILED, errors_from(exc)),
        )
    verdicts = []
    for index, event in enumerate(parsed.epcis_body.event_list):
        event_bytes = orjson.dumps(event)
        try:
            scan = map_event(event, mapping)
        except Unmappable as exc:
            verdicts.append(
                Verdict(
                    index, event_bytes, reason_code=ReasonCode.UNMAPPABLE_EPCIS, errors=exc.errors
                )
            )
            continue
        verdict = judge_value(index, orjson.dumps(scan), SCANS, endpoint.key_field, plan)
        if not verdict.accepted:
            verdict.value = event_bytes
            verdict.unit_id = _claimed_unit(scan)
        verdicts.append(verdict)
    return EpcisVerdicts(verdicts)
