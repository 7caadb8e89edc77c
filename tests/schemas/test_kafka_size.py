"""`schemas.kafka_size` sizes a record as aiokafka's producer does before it takes it.

The replay and the reference engine refuse a line whose record is too large from this
size, before decoding it; were it not the producer's own, a record at the limit could be
refused by `send` after all, or one the producer takes be refused by the oracle.
"""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from schemas.kafka_size import MAX_REQUEST_BYTES, record_size, too_large

# around every varint width a key's or a value's length can take, and the limit
LENGTHS = [0, 1, 63, 64, 65, 8191, 8192, 1_048_400, 1_048_491, 1_048_492, 1 << 20, 3 << 20]


@pytest.mark.parametrize("value_length", [None, *LENGTHS])
@pytest.mark.parametrize("key_length", [None, 0, 7, 64, 1024])
def test_the_size_is_aiokafkas_estimate(key_length: int | None, value_length: int | None) -> None:
    key = None if key_length is None else b"k" * key_length
    value = None if value_length is None else b"v" * value_length
    assert record_size(key, value) == DefaultRecordBatchBuilder.estimate_size_in_bytes(
        key, value, []
    )


def test_a_record_at_the_limit_is_taken_and_one_byte_more_refused() -> None:
    key = b"PO-1"
    at_limit = next(
        n
        for n in range(MAX_REQUEST_BYTES, 0, -1)
        if record_size(key, b"v" * n) <= MAX_REQUEST_BYTES
    )
    assert record_size(key, b"v" * at_limit) == MAX_REQUEST_BYTES
    assert too_large(key, b"v" * at_limit) is None
    refusal = too_large(key, b"v" * (at_limit + 1))
    assert refusal is not None
    assert refusal.type == "too_large"
    assert f"{MAX_REQUEST_BYTES + 1:,} bytes" in refusal.msg
