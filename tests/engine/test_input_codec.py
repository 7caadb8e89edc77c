"""The engine's Kafka input codec (`streams.codecs.InputCodec`): bad records become data."""

from __future__ import annotations

import json

from samples import PLAN, scan

from schemas.scans import ScanEvent
from streams.codecs import InputCodec, Rejected
from streams.topics import SCANS


def test_a_record_that_writes_a_key_twice_is_rejected_for_the_dead_letters() -> None:
    """The gateway refuses such an item; a producer writing to Kafka directly gets a dead
    letter, not the last value (what a first-wins consumer of the topic would not read)."""
    codec = InputCodec(SCANS, PLAN)
    good = json.dumps(scan()).encode()
    assert isinstance(codec._loads(good), ScanEvent)
    twice = good.replace(b'"quantity": ', b'"quantity": 1, "quantity": ', 1)
    rejected = codec._loads(twice)
    assert isinstance(rejected, Rejected)
    assert rejected.raw == twice
    assert rejected.reason_code.value == "validation_failed"
    assert [(e.loc, e.type) for e in rejected.errors] == [("quantity", "duplicate_key")]
