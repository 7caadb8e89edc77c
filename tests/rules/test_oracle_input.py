"""The oracle reads a scenario line's value as `chainwatch replay` publishes it.

Replay publishes the value's bytes as the file writes them, and the worker
decodes those; an oracle that decoded the line parser's re-serialisation saw
another record (of a key written twice, only the last value) and took one the
engine dead-letters, so the two could never agree on such a file.
"""

from __future__ import annotations

import json

from rules_builders import PLAN
from samples import padded_value

from schemas.kafka_size import MAX_REQUEST_BYTES
from streams.rules.oracle import run_scenario

SCAN = {
    "event_id": "e-1", "order_id": "PO-1", "stage": "knitting", "action": "started",
    "unit_id": "KNIT-01", "event_time": "2027-03-01T10:00:00Z", "quantity": 10, "uom": "pcs",
}  # fmt: skip


def _line(value: str) -> bytes:
    return f'{{"topic": "scans", "key": "PO-1", "value": {value}}}'.encode()


def test_a_value_writing_a_key_twice_is_a_dead_letter_as_the_engine_makes_it() -> None:
    written = json.dumps(SCAN)
    twice = written.replace('"unit_id": ', '"unit_id": "KNIT-02", "unit_id": ', 1)
    once = run_scenario([_line(written)], PLAN, None)
    assert (once.dead_letters, bool(once.alerts)) == (0, True)
    result = run_scenario([_line(twice)], PLAN, None)
    assert (result.dead_letters, result.alerts) == (1, [])


def test_a_record_kafka_would_not_take_is_a_dead_letter_as_the_replay_makes_it() -> None:
    """`chainwatch replay` dead-letters a line whose record cannot fit the producer's
    `max_request_size`, undecoded; the oracle took a valid one over it, so the two
    disagreed on its alerts, its dead letter and the clock its event time moved."""
    key = b"PO-1"
    at, over = (padded_value(SCAN, key, MAX_REQUEST_BYTES + n) for n in (0, 1))
    keyless = padded_value(SCAN, None, MAX_REQUEST_BYTES)  # over it with its id as key
    taken = run_scenario([_line(at.decode())], PLAN, None)
    assert (taken.dead_letters, bool(taken.alerts)) == (0, True)
    for refused in (_line(over.decode()), b'{"topic": "scans", "value": ' + keyless + b"}"):
        result = run_scenario([refused], PLAN, None)
        assert (result.dead_letters, result.alerts) == (1, [])
