"""Thousands of random and broken records: each ends in `dead-letter`, none stops the engine.

The oracle is the contract code itself: a record `decode_input` rejects must be
dead-lettered with a reason; a record it accepts goes into the state, unless
it is mis-keyed or the rules refuse it (a stage off the route) — which the
reference engine counts. The worker must survive all of it (the replay fails if it exits).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from topic_to_end import read_to_end

from chainwatch.replay import ReplayRun, no_progress
from chainwatch.settings import Settings
from schemas.dead_letter import DeadLetter, ReasonCode
from schemas.plan import load_plan
from schemas.validation import RecordRejected, check_key, decode_input
from streams.rules.oracle import run_scenario
from streams.topics import DEAD_LETTER, INPUT_TOPICS, TopicNames

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_RECORDS = 2500

VALID: dict[str, dict[str, Any]] = {
    "scans": {
        "event_id": "e-1", "order_id": "PO-1", "stage": "dyeing", "action": "started",
        "unit_id": "DYE-01", "event_time": "2027-03-01T10:00:00+05:30", "quantity": 10.5,
        "uom": "kg",
    },
    "orders": {
        "op": "created", "order_id": "PO-1", "customer_id": "C-1", "product": "crewneck",
        "quantity": 100, "placed_at": "2027-03-01T08:00:00Z", "due_at": "2027-03-20T08:00:00Z",
    },
    "unit-status": {
        "event_id": "u-1", "unit_id": "DYE-01", "status": "down", "reason": "power_outage",
        "event_time": "2027-03-01T09:00:00Z",
    },
    "crm.customers": {"customer_id": "C-1", "name": "Nordic Knits AB", "tier": "gold"},
}  # fmt: skip
JUNK: list[Any] = [
    None, 0, -1, 1e308, "", "x" * 70, [], {}, True, "2027-03-01T10:00:00", "PO 1", "silver",
    "offline", "rejected", {"nested": 1}, ["a"], "2027-13-45T99:00:00Z",
]  # fmt: skip


def _broken(rng: random.Random, topic: str, n: int) -> bytes:
    """One record of a random kind of damage (a few stay valid on purpose)."""
    value = dict(VALID[topic])
    for field in ("event_id", "order_id", "unit_id", "customer_id"):
        if field in value:
            value[field] = f"{value[field]}-{n}"
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 60))
    if kind == 1:
        text = json.dumps(value).encode()
        return text[: rng.randrange(1, len(text))]
    if kind == 2:
        return json.dumps(rng.choice([[1, 2], 42, "text", None, 3.5])).encode()
    if kind == 3:
        value[rng.choice(list(value))] = rng.choice(JUNK)
    elif kind == 4:
        del value[rng.choice(list(value))]
    elif kind == 5:
        value[rng.choice(list(value))] = rng.choice(JUNK)
        value[rng.choice(list(value))] = rng.choice(JUNK)
    else:
        value["unexpected"] = {"kept": "or ignored"}
    return json.dumps(value).encode()


def test_random_and_broken_records_all_end_in_dead_letters(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    plan = load_plan(None)
    records: list[tuple[str, bytes, bytes]] = []
    rejected = 0
    mis_keyed_count = 0
    accepted_lines: list[bytes] = []
    for n in range(N_RECORDS):
        topic = rng.choice(INPUT_TOPICS)
        raw = _broken(rng, topic, n)
        key = _key_for(rng, topic, raw, n)
        records.append((topic, key, raw))
        try:
            record = decode_input(topic, raw, plan=plan)
        except RecordRejected:
            rejected += 1
            continue
        try:
            check_key(topic, key, record)
        except RecordRejected:
            rejected += 1
            mis_keyed_count += 1
            continue
        accepted_lines.append(
            orjson.dumps({"topic": topic, "key": key.decode(), "value": json.loads(raw)})
        )
    refused_by_rules = run_scenario(accepted_lines, plan, None).dead_letters
    assert rejected > N_RECORDS // 2  # the fuzzer mostly breaks things

    empty = tmp_path / "empty.ndjson"
    empty.write_text("")
    run = ReplayRun(settings_factory(), empty, partitions=4, progress=no_progress)
    try:
        run.publish()
        names = TopicNames(run.settings.kafka.topic_prefix)
        producer = KafkaProducer(bootstrap_servers=run.settings.kafka.bootstrap, acks="all")
        for topic, key, raw in records:
            producer.send(names(topic), key=key, value=raw)
        producer.flush()
        producer.close()
        run.start_workers(1)
        run.finish(None, timeout_s=300)  # raises if the worker died on the way
        letters = read_to_end(run.settings.kafka.bootstrap, names(DEAD_LETTER))
    finally:
        run.close()

    assert len(letters) == rejected + refused_by_rules
    parsed = [DeadLetter.model_validate_json(v) for v in letters]
    assert all(letter.reason and letter.reason_code for letter in parsed)
    assert mis_keyed_count > 10
    assert sum(p.reason_code is ReasonCode.KEY_MISMATCH for p in parsed) == mis_keyed_count
    assert len({letter.dead_letter_id for letter in parsed}) == len(parsed)
    kafka_sourced = [p for p in parsed if p.raw_value() is not None]
    originals = {raw for _, _, raw in records}
    assert all(p.raw_value() in originals for p in kafka_sourced)


def _key_for(rng: random.Random, topic: str, raw: bytes, n: int) -> bytes:
    """The record's id as its key, as producers do; one in eight is mis-keyed on purpose."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    field = {"scans": "order_id", "orders": "order_id", "unit-status": "unit_id"}.get(
        topic, "customer_id"
    )
    own = value.get(field) if isinstance(value, dict) else None
    if isinstance(own, str) and rng.randrange(8):
        return own.encode()
    return f"k-{n % 97}".encode()
