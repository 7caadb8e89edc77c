"""The oracle reads a scenario line's value as `chainwatch replay` publishes it.

Replay publishes the value's bytes as the file writes them, and the worker
decodes those; an oracle that decoded the line parser's re-serialisation saw
another record (of a key written twice, only the last value) and took one the
engine dead-letters, so the two could never agree on such a file.
"""

from __future__ import annotations

import json

from rules_builders import PLAN

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
