"""Judging the items of one request: accepted records and rejections (pure, no I/O).

The verdict of an item is whatever `decode_input` says for the item's bytes
on the endpoint's topic - the same function the stream engine applies to Kafka
records - so an item the gateway accepts is never dead-lettered downstream for
a contract reason, and vice versa.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pydantic_core
import structlog
from pydantic import ValidationError

from schemas.common import number_problems
from schemas.customers import Tombstone
from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.epcis import EpcisDocument, EpcisMapping
from schemas.json_keys import duplicate_key_error
from schemas.plan import SlaPlan
from schemas.validation import (
    DEFAULT_MAX_CLOCK_SKEW,
    RecordRejected,
    check_clock_skew,
    check_unique_keys,
    decode_input,
    number_errors,
    rejection_of,
)
from streams.ingest.auth import Role
from streams.ingest.body import (
    Body,
    BodyTooLarge,
    DuplicateKey,
    RawItem,
    Unstructured,
    locate_array,
)
from streams.ingest.epcis_map import Unmappable, map_event, read_point_claim
from streams.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS

log = structlog.stdlib.get_logger(__name__)


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
    """One item's fate; `key` is set exactly when it is accepted. `unit_id` and `stage`
    are what the record claims (for a unit token's bounds), an EPCIS event's also when
    it is rejected (by its read point)."""

    index: int
    value: bytes
    key: bytes | None = None
    unit_id: str | None = None
    stage: str | None = None
    also_claims: tuple[tuple[str | None, str | None], ...] = ()
    """Every (`unit_id`, `stage`) the item as sent names (`every_claim`): a rejected
    one's, and a key written twice (the parser keeps the last, a consumer may keep the
    first). Filled for a unit token's posts."""
    reason_code: ReasonCode | None = None
    errors: list[ErrorDetail] | None = None

    @property
    def accepted(self) -> bool:
        return self.reason_code is None


def lenient_json(value: bytes) -> Any:
    """An EPCIS event parsed as far as a reader can, or None: `NaN`, a lone surrogate or
    a stray invalid byte does not hide which unit a rejected event claims."""
    try:
        return json.loads(value.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None


_CLAIM_TEXT: Final = re.compile(r'"(unit_id|stage)"\s*:\s*"((?:[^"\\]|\\.){0,200})"')


def every_claim(value: bytes) -> tuple[tuple[str | None, str | None], ...]:
    """Each `unit_id` and `stage` string the item's top-level object names, a key
    written twice included (for a unit token's bounds)."""
    objects: list[list[tuple[str, Any]]] = []

    def keep(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(pairs)
        return dict(pairs)

    text = value.decode("utf-8", "replace")
    try:
        parsed = json.loads(text, object_pairs_hook=keep)
    except (ValueError, RecursionError):
        # not readable even so (a trailing comma, text after it, nesting past the
        # parser's limit): every `"unit_id": "..."` and `"stage": "..."` in its text
        # counts, so such an item cannot carry another unit's record past the token
        return tuple(
            (v, None) if k == "unit_id" else (None, v) for k, v in _CLAIM_TEXT.findall(text)
        )
    if not isinstance(parsed, dict) or not objects:
        return ()
    top = objects[-1]  # the hook sees inner objects first
    return tuple(
        (v, None) if k == "unit_id" else (None, v)
        for k, v in top
        if k in ("unit_id", "stage") and isinstance(v, str)
    )


def _claims(parsed: Any) -> tuple[str | None, str | None]:
    """The `unit_id` and `stage` an item names, when they are strings."""
    if not isinstance(parsed, dict):
        return None, None
    unit, stage = parsed.get("unit_id"), parsed.get("stage")
    return (
        unit if isinstance(unit, str) else None,
        stage if isinstance(stage, str) else None,
    )


def _failed(index: int, value: bytes, exc: Exception) -> Verdict:
    """A bug met while judging one item: that item is rejected, the request goes on."""
    log.exception("item processing failed", index=index)
    error = ErrorDetail(loc="", msg=f"{type(exc).__name__}: {exc}"[:500], type="processing_error")
    return Verdict(index, value, reason_code=ReasonCode.PROCESSING_ERROR, errors=[error])


def judge_value(
    index: int,
    value: bytes,
    topic: str,
    key_field: str,
    plan: SlaPlan,
    max_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
) -> Verdict:
    try:
        record = decode_input(topic, value, plan=plan)
        check_clock_skew(record, datetime.now(UTC), max_skew)
    except RecordRejected as exc:
        return Verdict(index, value, reason_code=exc.reason_code, errors=exc.errors)
    except Exception as exc:  # one item's bug never fails the request
        return _failed(index, value, exc)
    if isinstance(record, Tombstone):
        msg = "a null record (tombstone) is not accepted here: use DELETE /v1/customers/{id}"
        return Verdict(
            index,
            value,
            reason_code=ReasonCode.NOT_OBJECT,
            errors=[ErrorDetail(loc="", msg=msg, type="null_value")],
        )
    key = str(getattr(record, key_field)).encode()
    return Verdict(
        index,
        value,
        key=key,
        unit_id=getattr(record, "unit_id", None),
        stage=getattr(record, "stage", None),
    )


def judge_items(
    items: list[RawItem],
    endpoint: Endpoint,
    plan: SlaPlan,
    max_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
    *,
    every_claim_of: bool = False,
) -> list[Verdict]:
    """Each item judged; `every_claim_of` (a unit token's post) also collects every unit
    and stage an item names, so that none claiming another unit gets through."""
    verdicts = []
    for item in items:
        verdict = judge_value(
            item.index, item.value, endpoint.topic, endpoint.key_field, plan, max_skew
        )
        if every_claim_of:
            verdict.also_claims = every_claim(item.value)
        verdicts.append(verdict)
    return verdicts


@dataclass(slots=True)
class EpcisVerdicts:
    """Per-event verdicts; `value` of an accepted one is the mapped scan, of a rejected
    one the event as sent (what an operator needs to fix the mapping and replay it)."""

    verdicts: list[Verdict]
    document_error: Verdict | None = None


EVENT_LIST: Final = ("epcisBody", "eventList")


def _document_error(body: Body, code: ReasonCode, loc: str, msg: str, kind: str) -> EpcisVerdicts:
    return EpcisVerdicts(
        [],
        Verdict(
            0, bytes(body), reason_code=code, errors=[ErrorDetail(loc=loc, msg=msg, type=kind)]
        ),
    )


def judge_epcis(
    body: Body,
    mapping: EpcisMapping,
    endpoint: Endpoint,
    plan: SlaPlan,
    max_items: int,
    max_item_bytes: int,
    max_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
) -> EpcisVerdicts:
    """Count, then map and validate every event of an `EPCISDocument`, one at a time.

    The events are located and counted before anything is parsed (`BodyTooLarge`
    beyond `max_items`), then each is parsed on its own, so memory follows one
    event, not the document. The rest of the document (its envelope) is
    validated with an empty `eventList` and may not exceed `max_item_bytes`. A
    body that is not an `EPCISDocument` is one rejected item (index 0), so
    partial mode dead-letters it like any other unusable input; so is one whose
    envelope holds a number a 64-bit float does not (CONTRACT v1.2: invalid
    wherever it appears).
    """
    try:
        located = locate_array(body, EVENT_LIST, max_items, max_item_bytes)
    except Unstructured as exc:
        scalar = _small_json_scalar(body)
        if scalar is not None:  # `null`, `3`, `"x"`: JSON, but no document ("text after
            # the end of the document" said the scanner, which looks for an object)
            return _document_error(
                body, ReasonCode.NOT_OBJECT, "",
                f"an EPCISDocument is a JSON object, not {scalar}", "model_type",
            )  # fmt: skip
        return _document_error(
            body, ReasonCode.NOT_JSON, "", f"the body is not JSON: {exc}", "json_invalid"
        )
    except DuplicateKey as exc:
        error = duplicate_key_error(exc.path)
        return _document_error(body, ReasonCode.VALIDATION_FAILED, error.loc, error.msg, error.type)
    if located is None:
        return _document_error(
            body,
            ReasonCode.VALIDATION_FAILED,
            ".".join(EVENT_LIST),
            "an EPCISDocument needs an epcisBody.eventList array",
            "missing",
        )
    view = memoryview(body)
    envelope = view[: located.start].tobytes() + b"[]" + view[located.end :].tobytes()
    if len(envelope) > max_item_bytes:
        raise BodyTooLarge(
            f"the document outside eventList has {len(envelope)} bytes, more than the limit "
            f"of {max_item_bytes}"
        )
    try:
        document = _read_envelope(envelope)
    except RecordRejected as exc:
        return EpcisVerdicts(
            [], Verdict(0, bytes(body), reason_code=exc.reason_code, errors=exc.errors)
        )
    verdicts = []
    for index, (start, end) in enumerate(located.items):
        event = view[start:end].tobytes()
        try:
            verdicts.append(
                _judge_event(index, event, mapping, endpoint, plan, max_skew, document.context)
            )
        except Exception as exc:  # one event's bug never fails the request
            verdicts.append(_failed(index, event, exc))
    return EpcisVerdicts(verdicts)


def _read_envelope(envelope: bytes) -> EpcisDocument:
    """The document without its events, or `RecordRejected` classified as for any input
    (`rejection_of`): JSON nested beyond the parser's limit is `not_json`, as a body that
    does not parse, not `validation_failed`."""
    try:
        document = EpcisDocument.model_validate_json(envelope)
    except ValidationError as exc:
        raise rejection_of(exc, ReasonCode.VALIDATION_FAILED) from None
    # the model ignores the header and extensions, so their numbers are checked here,
    # and keys written twice anywhere (the model read one of them)
    errors = number_errors(pydantic_core.from_json(envelope))
    try:
        check_unique_keys(envelope)
    except RecordRejected as exc:
        errors += exc.errors
    if errors:
        raise RecordRejected(ReasonCode.VALIDATION_FAILED, errors)
    return document


def _small_json_scalar(body: Body) -> str | None:
    """The JSON type of a short body that is JSON but neither object nor array."""
    if len(body) > 1024:
        return None
    try:
        value = pydantic_core.from_json(bytes(body))
    except ValueError:
        return None
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
             str: "a string"}  # fmt: skip
    return names.get(type(value))


def _judge_event(
    index: int,
    event_bytes: bytes,
    mapping: EpcisMapping,
    endpoint: Endpoint,
    plan: SlaPlan,
    max_skew: timedelta,
    context: Any = None,
) -> Verdict:
    """An event's verdict with every error it has at once, as a scan's validation lists
    every field's: its numbers a 64-bit float does not hold and keys written twice (both
    `validation_failed`, which wins), the mapping's reasons (`unmappable_epcis`), and the
    mapped scan's own errors."""
    try:
        event = pydantic_core.from_json(event_bytes, allow_inf_nan=False)
    except ValueError as exc:
        error = ErrorDetail(loc="", msg=f"the event is not JSON: {exc}", type="json_invalid")
        unit_id, stage = read_point_claim(lenient_json(event_bytes), mapping)
        return Verdict(
            index, event_bytes, unit_id=unit_id, stage=stage,
            reason_code=ReasonCode.NOT_JSON, errors=[error],
        )  # fmt: skip
    numbers = number_errors(event)
    try:
        check_unique_keys(event_bytes)
        invalid = numbers
    except RecordRejected as exc:
        invalid = numbers + exc.errors
    if numbers:  # mapped without them: the event hash does arithmetic on its numbers
        event = _without(event, [path for path, _ in number_problems(event)])
    try:
        scan = map_event(event, mapping, context)
    except Unmappable as exc:
        code = ReasonCode.VALIDATION_FAILED if invalid else ReasonCode.UNMAPPABLE_EPCIS
        return Verdict(
            index, event_bytes, unit_id=exc.unit_id, stage=exc.stage,
            reason_code=code, errors=invalid + exc.errors,
        )  # fmt: skip
    # The stdlib writes what the event held as it was (a huge integer, an infinity), so
    # `decode_input` judges the scan by the same number rules as any other scan.
    scan_bytes = json.dumps(scan, ensure_ascii=False, separators=(",", ":")).encode()
    verdict = judge_value(index, scan_bytes, SCANS, endpoint.key_field, plan, max_skew)
    if invalid:
        verdict.key = None
        verdict.errors = invalid + (verdict.errors or [])
        if verdict.reason_code in (None, ReasonCode.VALIDATION_FAILED):
            verdict.reason_code = ReasonCode.VALIDATION_FAILED
    if not verdict.accepted:
        verdict.value = event_bytes
        verdict.unit_id, verdict.stage = _claims(scan)
    return verdict


def _without(event: Any, paths: list[tuple[str | int, ...]]) -> Any:
    """`event` with the values at `paths` null, changed in place: it was parsed for this
    judging alone, and its bytes are what a dead letter keeps."""
    for path in paths:
        if not path:
            return None
        parent = event
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = None
    return event
