"""Whether Kafka's producer takes a record, told from its key's and value's lengths.

`chainwatch replay` refuses a scenario line whose record the producer would refuse
before it decodes the value, and the reference engine (`streams.rules.oracle`)
refuses the same lines, so the two agree on every file. Decoding first cost a
hostile 8 MiB value seconds and the better part of a gigabyte, only to learn from
`send` that Kafka would never take it.
"""

from __future__ import annotations

from typing import Final

from schemas.dead_letter import KAFKA_MAX_MESSAGE_BYTES, ErrorDetail

MAX_REQUEST_BYTES: Final = KAFKA_MAX_MESSAGE_BYTES
"""The replay producer's `max_request_size` (aiokafka's default, Kafka's
`max.request.size`): a record whose batch is larger is refused by `send`. The broker's
`message.max.bytes` (1,048,588 by default) takes every batch of one record under it."""

_BATCH_HEADER: Final = 61
"""A v2 record batch's header (aiokafka's `DefaultRecordBatchBuilder.HEADER_STRUCT`)."""
_RECORD_OVERHEAD: Final = 21
"""The most a record's own fields take (length, attributes, timestamp and offset deltas)."""


def _varint_size(value: int) -> int:
    """Bytes of `value` as Kafka's zig-zag varint (a length, so never negative)."""
    zigzag, size = value << 1, 1
    while zigzag > 0x7F:
        zigzag >>= 7
        size += 1
    return size


def _field_size(data: bytes | None) -> int:
    return 1 if data is None else _varint_size(len(data)) + len(data)


def record_size(key: bytes | None, value: bytes | None) -> int:
    """The size aiokafka's producer checks against `max_request_size` before it takes a
    record: a batch holding it alone (`DefaultRecordBatchBuilder.estimate_size_in_bytes`
    without headers; a test holds the two equal)."""
    return _BATCH_HEADER + _RECORD_OVERHEAD + _field_size(key) + _field_size(value) + 1


def too_large(
    key: bytes | None, value: bytes | None, limit: int = MAX_REQUEST_BYTES
) -> ErrorDetail | None:
    """Why the producer would refuse the record (`too_large`, as a dead letter's error
    detail), or None when it takes it. A key only adds to the size: a record too large
    without the key it will be sent with is too large with it."""
    size = record_size(key, value)
    if size <= limit:
        return None
    return ErrorDetail(
        loc="",
        msg=f"Kafka refuses it: the record is {size:,} bytes, over the producer's "
        f"max_request_size ({limit:,})",
        type="too_large",
    )
