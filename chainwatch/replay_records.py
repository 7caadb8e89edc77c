"""What a scenario line sends to Kafka, or why `chainwatch replay` dead-letters it itself.

A line's record goes out as the file writes it, also when the engine will refuse it
(the engine dead-letters it, as it would a live record). The replay refuses only what
Kafka would not take: a record over the producer's `max_request_size`, and a keyless
one on the compacted CRM topic or with neither key nor value. The reference engine
(`streams.rules.oracle`) refuses the same lines, with the same `too_large` and
`line_key`, so a replay and the oracle agree on every file.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.kafka_size import too_large
from schemas.plan import SlaPlan
from schemas.replay import ReplayLine
from schemas.topics import CUSTOMERS
from schemas.validation import KEYLESS_TOMBSTONE, RecordRejected, decode_input, line_key
from streams.rules.facts import to_ms


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A line's record as it is sent: its key, its value's bytes as the file writes
    them, and its event time in ms (None: it has none, or it is a CRM record, which
    moves no clock)."""

    key: bytes | None
    value: bytes | None
    ms: int | None


@dataclass(frozen=True, slots=True)
class Refused:
    """A line the replay dead-letters itself: Kafka would not take its record."""

    errors: list[ErrorDetail]
    code: ReasonCode


def outgoing(replay: ReplayLine, line: bytes, plan: SlaPlan) -> Outgoing | Refused:
    """What `line` (parsed as `replay`) sends, or why it is a dead letter here.

    A record too large for Kafka is refused before its value is decoded: an 8 MiB
    value of small objects took 11 s and 810 MB to publish, decoded only for `send` to
    refuse it (`decode_replay_line` refuses a value too large with the line's own key
    without even parsing it). Its size is checked again with the key it is sent with,
    its record's id for a keyless line.
    """
    value = replay.value_as_written(line)  # the file's bytes, as the worker reads them
    key = replay.key_bytes()
    refusal = too_large(key, value)  # a key from the record's id only adds to the size
    if refusal is not None:
        return Refused([refusal], ReasonCode.PROCESSING_ERROR)
    ms: int | None = None
    rejected: RecordRejected | None = None
    try:
        record = decode_input(replay.topic, value, plan=plan, key=key)
        key = line_key(key, replay.topic, record)
        event_time = getattr(record, "event_time", None)
        if event_time is not None and replay.topic != CUSTOMERS:
            ms = to_ms(event_time)
    except RecordRejected as exc:
        rejected = exc  # the engine dead-letters it; it is sent as the file says
    if key is None and (replay.topic == CUSTOMERS or value is None):
        # Kafka takes no keyless record on the compacted CRM topic, nor one with
        # neither key nor value: the line (an invalid record naming no customer_id,
        # a tombstone without a key) is dead-lettered here, as the engine would
        return _keyless_refusal(rejected)
    refusal = too_large(key, value)
    if refusal is not None:
        return Refused([refusal], ReasonCode.PROCESSING_ERROR)
    return Outgoing(key, value, ms)


def _keyless_refusal(rejected: RecordRejected | None) -> Refused:
    """Why a line Kafka would not take without a key is a dead letter: its record's own
    fault if it has one, else it is a tombstone, which names its customer by its key only.

    That is the record's fault, not the line's (`key` is optional in a line, so the line
    is well-formed): the engine's reason for a keyless tombstone read off Kafka,
    `validation_failed` at `key`, not `bad_replay_line`."""
    if rejected is not None:
        return Refused(rejected.errors, rejected.reason_code)
    return Refused([KEYLESS_TOMBSTONE], ReasonCode.VALIDATION_FAILED)
