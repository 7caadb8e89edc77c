"""Where input bytes become a model or a rejection - and nothing else does.

No Kafka here: agents, the HTTP gateway, the sink and `replay` call these pure
functions and turn a `RecordRejected` into a `DeadLetter`. Every input path
(Kafka, gateway, EPCIS, replay files) goes through `decode_input`, so the
contract (v1.2) holds on all of them alike.

The happy path is one `validate_json` on the raw bytes: parsing and validation
run in pydantic-core, timestamps included (see `schemas.common.UtcDatetime`),
with no intermediate dict. Each model gets a decode validator built from its
own core schema with one change: unknown fields, which the model ignores, are
validated as `SafeJson` and then dropped, so a number a 64-bit float does not
hold is invalid wherever it appears (CONTRACT.md v1.2) at no cost for records
without unknown fields.

Errors keep the reference wording: a native failure of a timestamp, an
attribute or a pass-through number is a marker error type, translated here
(on the error path only) by re-running the Python reference rule on the
offending value. The error classification reads pydantic's own error types,
so it agrees with what the parser saw.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError, SchemaValidator, core_schema

from schemas.common import (
    IDENTIFIER_PATTERN,
    NUMBER_ERROR,
    TIMESTAMP_ERROR,
    format_utc,
    number_problem,
    number_problems,
    parse_timestamp,
    safe_json_core_schema,
)
from schemas.customers import TOMBSTONE, Customer, Tombstone
from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.json_keys import SEND_ONCE, WRITE_ONCE, repeated_keys
from schemas.kafka_size import MAX_REQUEST_BYTES, record_size, too_large
from schemas.orders import OrderRecord
from schemas.plan import SlaPlan
from schemas.replay import ReplayLine
from schemas.replay_scan import (
    Spans,
    container_spans,
    last_value,
    value_spans,
    values_blanked,
    values_cut,
)
from schemas.scans import ATTRIBUTE_ERROR, QC_STAGE_CONTEXT_KEY, ScanEvent, attribute_value
from schemas.topics import COMPACTED_TOPICS, CUSTOMERS, ORDERS, SCANS, UNIT_STATUS
from schemas.unit_status import STAGES_CONTEXT_KEY, UnitStatus

__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW",
    "ID_FIELD_BY_TOPIC",
    "KEYLESS_TOMBSTONE",
    "MODEL_BY_TOPIC",
    "ErrorDetail",
    "InputRecord",
    "ReasonCode",
    "RecordRejected",
    "check_clock_skew",
    "check_key",
    "check_numbers",
    "check_unique_keys",
    "decode_input",
    "decode_replay_line",
    "errors_from",
    "line_key",
    "number_errors",
    "record_id",
    "rejection_of",
]

InputRecord = ScanEvent | UnitStatus | OrderRecord | Customer | Tombstone

MODEL_BY_TOPIC: Final[dict[str, type[BaseModel]]] = {
    ORDERS: OrderRecord,
    CUSTOMERS: Customer,
    SCANS: ScanEvent,
    UNIT_STATUS: UnitStatus,
}
"""Logical input topic -> its record model (CONTRACT.md, Inputs)."""

ID_FIELD_BY_TOPIC: Final[dict[str, str]] = {
    ORDERS: "order_id",
    SCANS: "order_id",
    UNIT_STATUS: "unit_id",
    CUSTOMERS: "customer_id",
}
"""The id field a record's Kafka key must equal (CONTRACT.md v1.2, "Key and id agree")."""

DEFAULT_MAX_CLOCK_SKEW: Final = timedelta(hours=24)
"""How far in the future the gateway lets an `event_time` be (CONTRACT.md v1.2)."""

KEYLESS_TOMBSTONE: Final = ErrorDetail(
    loc="key",
    msg="a tombstone's key is the customer_id it deletes: this one has no key",
    type="missing",
)
"""Why a tombstone without a key is a dead letter (`validation_failed`): it names its
customer by its key only. The engine gives it for one read off Kafka (a topic run
uncompacted takes it) and the replay for such a scenario line (the compacted topic
would not take it): one fault, one reason, wherever it is found."""

_MAX_MSG = 500
_MAX_KEY_TEXT = 80
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN.encode())


class RecordRejected(Exception):
    """An input record that breaks the contract: goes to the dead letters, never crashes."""

    def __init__(self, reason_code: ReasonCode, errors: list[ErrorDetail]) -> None:
        self.reason_code = reason_code
        self.errors = errors
        first = f": {errors[0].loc or '<record>'}: {errors[0].msg}" if errors else ""
        super().__init__(f"{reason_code.value}{first}")


@dataclass(frozen=True, slots=True)
class _Decoder:
    """A model's decode validator; `drop_extras` when the model ignores unknown fields."""

    validator: SchemaValidator
    drop_extras: bool


def _model_node(schema: Any, model: type[BaseModel]) -> dict[str, Any]:
    """The `model` node of `model`'s core schema (under validator/definition wrappers)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "model" and node.get("cls") is model:
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise LookupError(f"no model node for {model.__name__}")


def _decoder(model: type[BaseModel]) -> _Decoder:
    """`model`'s own core schema, with its ignored unknown fields validated as `SafeJson`."""
    schema = copy.deepcopy(model.__pydantic_core_schema__)
    node = _model_node(schema, model)
    config = dict(node.get("config") or {})
    drop = config.get("extra_fields_behavior", "ignore") == "ignore"
    if drop:
        node["config"] = cast(core_schema.CoreConfig, {**config, "extra_fields_behavior": "allow"})
        fields = node["schema"]
        fields["extra_behavior"] = "allow"
        fields["extras_schema"] = safe_json_core_schema()
    # pydantic-core would reuse the model's own (prebuilt) validator for a
    # complete model class, ignoring the change: build while it reads incomplete.
    complete = model.__dict__.get("__pydantic_complete__", False)
    model.__pydantic_complete__ = False
    try:
        validator = SchemaValidator(schema)
    finally:
        model.__pydantic_complete__ = complete
    return _Decoder(validator, drop)


_DECODERS: Final[dict[str, _Decoder]] = {
    topic: _decoder(model) for topic, model in MODEL_BY_TOPIC.items()
}


_CONTEXTS: dict[int, tuple[SlaPlan, dict[str, Any]]] = {}
"""id(plan) -> (plan, its validation context). Not `plan.memo`: reading a pydantic
private attribute costs microseconds, more than the rest of a decode's Python."""


def _context(plan: SlaPlan) -> dict[str, Any]:
    """The validation context of `plan`: its QC stage and its stages (built once per plan)."""
    entry = _CONTEXTS.get(id(plan))
    if entry is not None and entry[0] is plan:
        return entry[1]
    if len(_CONTEXTS) >= 64:  # plans are few; tests build many
        _CONTEXTS.clear()
    context = {QC_STAGE_CONTEXT_KEY: plan.qc_stage, STAGES_CONTEXT_KEY: frozenset(plan.route)}
    _CONTEXTS[id(plan)] = (plan, context)
    return context


def decode_input(
    topic: str, raw_value: bytes | None, *, plan: SlaPlan, key: bytes | None = None
) -> InputRecord:
    """Validate the value (and key) of one record of a logical input `topic`.

    Raises `RecordRejected` for any bad input (`not_json`, `not_object`,
    `validation_failed`, and `key_mismatch` when `key` is given, present and
    differs from the record's id field), and `ValueError` for a topic that is
    not an input topic: that is a wiring bug, not bad data, and must fail
    loudly. `plan` supplies the QC stage (`rejected` scans) and the stages a
    unit status may name. A null value (Kafka null, or the JSON literal
    `null`) on `crm.customers` is a tombstone; elsewhere it is `not_object`.
    """
    decoder = _DECODERS.get(topic)
    if decoder is None:
        raise ValueError(f"not an input topic: {topic!r}")
    if raw_value is None:
        if topic in COMPACTED_TOPICS:
            check_key(topic, key, TOMBSTONE)
            return TOMBSTONE
        raise RecordRejected(
            ReasonCode.NOT_OBJECT, [ErrorDetail(loc="", msg="value is null", type="null_value")]
        )
    try:
        record = decoder.validator.validate_json(raw_value, context=_context(plan))
    except ValidationError as exc:
        rejection = rejection_of(exc, ReasonCode.VALIDATION_FAILED)
        if (
            rejection.reason_code is ReasonCode.NOT_OBJECT
            and topic in COMPACTED_TOPICS
            and raw_value.strip() == b"null"
        ):
            check_key(topic, key, TOMBSTONE)
            return TOMBSTONE
        if rejection.reason_code is ReasonCode.VALIDATION_FAILED:
            _add_repeated_keys(rejection, raw_value)
        raise rejection from None
    check_unique_keys(raw_value)
    if decoder.drop_extras:
        object.__setattr__(record, "__pydantic_extra__", None)
    if key is not None:
        check_key(topic, key, record)
    return cast(InputRecord, record)


def check_unique_keys(
    raw_value: bytes | bytearray | str,
    *,
    nested: bool = True,
    reason_code: ReasonCode = ReasonCode.VALIDATION_FAILED,
    fix: str = SEND_ONCE,
) -> None:
    """`reason_code` when an object of the value (with `nested=False`: the value itself)
    writes a key twice (`duplicate_key`).

    Every path publishes or keeps a record's bytes as sent, and parsers disagree on
    which of two equal keys counts: what was validated here must be what any
    consumer reads. A value the model's parser took but Python's does not is
    refused as `not_json` rather than let through unchecked.
    """
    try:
        errors = repeated_keys(raw_value, nested=nested, fix=fix)
    except (ValueError, RecursionError) as exc:
        raise RecordRejected(
            ReasonCode.NOT_JSON, [_detail((), f"Invalid JSON: {exc}", "json_invalid")]
        ) from None
    if errors:
        raise RecordRejected(reason_code, errors)


def _add_repeated_keys(
    rejection: RecordRejected,
    raw_value: bytes | bytearray | str,
    *,
    nested: bool = True,
    fix: str = SEND_ONCE,
) -> None:
    """The keys written twice beside the model's errors: the value the model judged may
    not be the one another parser reads. Nothing when Python cannot parse the value."""
    with contextlib.suppress(ValueError, RecursionError):
        rejection.errors.extend(repeated_keys(raw_value, nested=nested, fix=fix))


def record_id(topic: str, record: InputRecord) -> str | None:
    """The id field's value a record's Kafka key must equal (`ID_FIELD_BY_TOPIC`).

    None for a tombstone: it carries no id, its key is the id.
    """
    if isinstance(record, Tombstone):
        return None
    said: str = getattr(record, ID_FIELD_BY_TOPIC[topic])
    return said


def line_key(key: bytes | None, topic: str, record: InputRecord) -> bytes | None:
    """The Kafka key a replay line is published with: its own, or else its record's id.

    A keyless line is valid (the contract allows keyless records), but Kafka
    refuses a keyless record on a compacted topic (`crm.customers`: the replay
    ended with `UnknownError`), and spreads keyless records over every partition,
    where the engine would forward each to its id's partition first. Keyed with its
    id, it is read where a producer keying its records would put it. A tombstone
    has no id: it keeps what the file gives. Here, not in the replay, so that the
    reference engine sizes the record Kafka is sent as the replay does.
    """
    if key is not None:
        return key
    own = record_id(topic, record)
    return None if own is None else own.encode()


def check_key(topic: str, key: bytes | None, record: InputRecord) -> None:
    """`key_mismatch` when a present Kafka `key` differs from the record's id field.

    CONTRACT.md v1.2: a mis-keyed record would build a second, partial state on
    another partition. A tombstone has no id to compare: its key is the id, so it
    must be one (`validation_failed` otherwise: a 200 KB key, `bad key\x00` or a
    JSON-quoted `"C-7"` were kept as state, and the engine and the sink read the
    quoted one differently).
    """
    field = ID_FIELD_BY_TOPIC.get(topic)
    if key is None or field is None:
        return
    text = key.decode("utf-8", "replace")
    if len(text) > _MAX_KEY_TEXT:
        text = text[: _MAX_KEY_TEXT - 3] + "..."
    if isinstance(record, Tombstone):
        if _IDENTIFIER.fullmatch(key) is None:
            raise RecordRejected(
                ReasonCode.VALIDATION_FAILED,
                [
                    ErrorDetail(
                        loc="key",
                        msg=f"a tombstone's key is the {field} it deletes: {text!r} is not "
                        "1-64 characters of [A-Za-z0-9._:-]",
                        type="string_pattern_mismatch",
                    )
                ],
            )
        return
    said: str = getattr(record, field)
    if key == said.encode():
        return
    raise RecordRejected(
        ReasonCode.KEY_MISMATCH,
        [
            ErrorDetail(
                loc=field,
                msg=f"the record key {text!r} differs from {field} {said!r}",
                type="key_mismatch",
            )
        ],
    )


def check_clock_skew(
    record: InputRecord, now: datetime, max_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW
) -> None:
    """`validation_failed` when the record's `event_time` is more than `max_skew` after `now`.

    CONTRACT.md v1.2: the HTTP gateway rejects event times too far in the
    future (a unit with a wrong clock would otherwise hold deadlines open for
    days); past times are valid (backfills, replays). Records without an
    `event_time` (customers, tombstones) pass.
    """
    event_time = getattr(record, "event_time", None)
    if event_time is None or event_time - now <= max_skew:
        return
    ahead = event_time - now
    raise RecordRejected(
        ReasonCode.VALIDATION_FAILED,
        [
            ErrorDetail(
                loc="event_time",
                msg=(
                    f"event_time {format_utc(event_time)} is {_duration(ahead)} ahead of the "
                    f"gateway's clock (more than the allowed clock skew of {_duration(max_skew)})"
                ),
                type="timestamp_future",
            )
        ],
    )


def check_numbers(value: Any) -> None:
    """`validation_failed` when a parsed JSON value holds a number a 64-bit float does not.

    For input that reaches the contract other than through `decode_input`: an
    EPCIS event is mapped field by field, so an integer beyond +-2^53 in its
    extension fields never met the models' checks (it was accepted, where the
    same number in a scan is refused), and the event hash's arithmetic failed
    on one beyond a float (CONTRACT v1.2: invalid wherever it appears, on every
    path alike).
    """
    errors = number_errors(value)
    if errors:
        raise RecordRejected(ReasonCode.VALIDATION_FAILED, errors)


def number_errors(value: Any) -> list[ErrorDetail]:
    """One error per number of a parsed JSON value that a 64-bit float does not hold
    (`check_numbers`), for a caller that lists them beside its own errors."""
    return [_detail(path, error.message(), error.type) for path, error in number_problems(value)]


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def decode_replay_line(raw_line: bytes | str) -> ReplayLine:
    """Validate one scenario line (CONTRACT.md, replay files).

    `not_json` for a line that does not parse (a truncated last line, say),
    `bad_replay_line` for JSON that is not a `{topic, key?, value}` object, and for
    one that writes a key of its own twice (`duplicate_key`): the parser keeps the
    last `value` or `topic`, so which record was replayed, and where, was the
    parser's choice. A key its `value` repeats is the engine's to refuse.

    `processing_error` (error `too_large`) for a line whose `value` Kafka's producer
    would refuse with the line's own key (`schemas.kafka_size`): told from the value's
    length, found without parsing it (`schemas.replay_scan`), after the rest of the line
    was checked as above. Parsing it built every object of a hostile value of megabytes
    (an 8 MiB one of small objects: seconds and hundreds of MB) for a record that is a
    dead letter whatever it holds, valid JSON or not; but for nesting deeper than the
    parser takes (`schemas.replay_scan.PARSER_DEPTH`): the parser's `not_json`, in its
    words.
    """
    raw = raw_line.encode("utf-8", "surrogatepass") if isinstance(raw_line, str) else raw_line
    if record_size(None, raw) > MAX_REQUEST_BYTES:  # a shorter line's value fits
        _refuse_too_large(raw)
    return _decode_replay_line(raw_line)


_MAX_KEY_BYTES: Final = 4 * 1024
"""The most bytes a line's key takes: 1,024 characters (`ReplayLine.key`), of 4 bytes at
most each in UTF-8."""


def _refuse_too_large(line: bytes) -> None:
    """Raise `too_large` when `line`'s value cannot fit a Kafka record with its key, the
    line being valid with its values left out; nothing when the value fits, or when the
    scan cannot follow the line (broken, or nested deeper than the parser takes): the
    line is then parsed whole, and the parser says what is wrong with it."""
    last = last_value(line)  # the one the line parser keeps
    if last is None:
        return
    value = line[last.start : last.end]
    if record_size(None, value) + _MAX_KEY_BYTES + 2 <= MAX_REQUEST_BYTES:
        return  # it fits with any key the line may write
    values = value_spans(line) if last.several else Spans((last.start, last.end))
    if values is None:
        return
    try:
        envelope = _decode_replay_line(values_cut(line, values))  # raises for its faults
    except RecordRejected as exc:
        if exc.reason_code is ReasonCode.NOT_JSON:  # said at a place of the cut line
            _decode_replay_line(values_blanked(line, values))  # the same, at the line's own
        raise
    refusal = too_large(envelope.key_bytes(), value)
    if refusal is not None:
        raise RecordRejected(ReasonCode.PROCESSING_ERROR, [refusal])


def _decode_replay_line(raw_line: bytes | str) -> ReplayLine:
    try:
        line = ReplayLine.model_validate_json(raw_line)
    except ValidationError as exc:
        rejection = rejection_of(exc, ReasonCode.BAD_REPLAY_LINE)
        if rejection.reason_code is ReasonCode.BAD_REPLAY_LINE:
            _add_repeated_keys(rejection, _own_keys(raw_line), nested=False, fix=WRITE_ONCE)
        raise rejection from None
    check_unique_keys(
        _own_keys(raw_line), nested=False, reason_code=ReasonCode.BAD_REPLAY_LINE, fix=WRITE_ONCE
    )
    return line


def _own_keys(line: bytes | str) -> bytes | str:
    """What of `line` its own keys are checked in: a line longer than `_CUT_FROM` with each
    member's array or object cut to `0` (`container_spans`), when the scan follows it.
    Python's parser built every object of the line only to learn the names beside them:
    2 s and 750 MB for 8 MiB of arrays nested 150 deep in a member the line ignores, its
    record published all the same. A value's own keys are the engine's to check."""
    if isinstance(line, str) or len(line) <= _CUT_FROM:
        return line
    containers = container_spans(line)
    return line if containers is None else values_cut(line, containers)


_CUT_FROM: Final = 16 * 1024
"""The longest line whose own keys are checked in the line as it is: a line of the
contract's records is far shorter, Python's parse of it (~3 us) costs less than a scan
and a cut, and of the worst 16 kB a few milliseconds."""


def errors_from(exc: ValidationError) -> list[ErrorDetail]:
    """pydantic's errors as dead-letter details (dotted `loc`, bounded `msg`).

    Marker errors of the native checks are replaced by the reference rule's
    own error for the offending value (`_TRANSLATORS`).
    """
    errors = exc.errors(include_url=False, include_context=True)
    details = []
    for error in errors:
        loc: tuple[int | str, ...] = tuple(error["loc"])
        kind, msg = error["type"], error["msg"]
        translate = _TRANSLATORS.get(kind)
        if translate is not None:
            found = translate(error.get("input"), error.get("ctx") or {})
            if found is not None:
                path, problem = found
                loc, kind, msg = loc + path, problem.type, problem.message()
        details.append(_detail(loc, msg, kind))
    return details


def _timestamp_problem(
    value: Any, ctx: Mapping[str, Any]
) -> tuple[tuple[int | str, ...], PydanticCustomError] | None:
    try:
        lo, hi = ctx.get("min_time"), ctx.get("max_time")
        if isinstance(lo, str) and isinstance(hi, str):
            parse_timestamp(value, datetime.fromisoformat(lo), datetime.fromisoformat(hi))
        else:
            parse_timestamp(value)
    except PydanticCustomError as problem:
        return (), problem
    return None


def _attribute_problem(
    value: Any, ctx: Mapping[str, Any]
) -> tuple[tuple[int | str, ...], PydanticCustomError] | None:
    try:
        attribute_value(value)
    except PydanticCustomError as problem:
        return (), problem
    return None


def _number_problem(
    value: Any, ctx: Mapping[str, Any]
) -> tuple[tuple[int | str, ...], PydanticCustomError] | None:
    return number_problem(value)


_TRANSLATORS: Final[
    dict[
        str,
        Callable[
            [Any, Mapping[str, Any]], tuple[tuple[int | str, ...], PydanticCustomError] | None
        ],
    ]
] = {
    TIMESTAMP_ERROR: _timestamp_problem,
    ATTRIBUTE_ERROR: _attribute_problem,
    NUMBER_ERROR: _number_problem,
}


def rejection_of(exc: ValidationError, otherwise: ReasonCode) -> RecordRejected:
    """Classify by pydantic's own root error: bad JSON (incl. bad UTF-8, or nested beyond
    the parser's limit) is `not_json`, a value that is no object `not_object`."""
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
