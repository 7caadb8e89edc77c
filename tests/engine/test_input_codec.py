"""The engine's Kafka input codec (`streams.codecs.InputCodec`): bad records become data;
its topics' schema (`InputSchema`) decodes as faust's own path did."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from faust.types.tuples import Message
from samples import PLAN, scan

from schemas.scans import ScanEvent
from streams.app import create_app
from streams.codecs import InputCodec, InputSchema, Rejected
from streams.engine.agents import Engine, EngineConfig
from streams.topics import SCANS, TopicNames


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


def test_a_record_whose_decoding_raises_is_a_processing_error_not_a_crash_or_a_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the contract's check (a validator raising TypeError, which pydantic lets
    through) made faust skip the record through its registry's decode error, and would end
    the worker's fetch loop through `InputSchema`: CONTRACT v1.2 makes it a dead letter."""

    def broken(topic: str, raw: bytes, *, plan: Any) -> Any:
        raise TypeError("a validator's bug")

    monkeypatch.setattr("streams.codecs.decode_input", broken)
    codec = InputCodec(SCANS, PLAN)
    raw = json.dumps(scan()).encode()
    message = Message("t.scans", 0, 7, 0.0, 0, [], b"k", raw, None)
    app: Any = None  # (unused by the schema's value decode)
    for rejected in (codec._loads(raw), InputSchema(codec).loads_value(app, message)):
        assert isinstance(rejected, Rejected)
        assert rejected.raw == raw
        assert rejected.reason_code.value == "processing_error"
        assert [(e.type, e.msg) for e in rejected.errors] == [
            ("TypeError", "TypeError: a validator's bug")
        ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"PO-1", json.dumps(scan()).encode()),
        (None, json.dumps(scan()).encode()),
        (b"PO-1", b"{not json"),
        (b"PO-1", b"[1, 2]"),
        (
            b"PO-1",
            json.dumps(scan()).encode().replace(b'"quantity": ', b'"quantity": 1, "quantity": ', 1),
        ),
        (b"PO-1", None),
    ],
    ids=["scan", "keyless", "not-json", "not-object", "key-twice", "tombstone"],
)
def test_the_engines_input_topic_decodes_as_fausts_own_schema_path(
    tmp_path: Path, key: bytes | None, value: bytes | None
) -> None:
    """`InputSchema` skips faust's serializer registry: each event's key and value are
    what the registry path gave for the same message (the "raw" key serializer, the
    codec as value serializer, empty values allowed)."""
    app = create_app("schema-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=PLAN))
    theirs = app.topic(
        "t.scans", key_serializer="raw", value_serializer=InputCodec(SCANS, PLAN), allow_empty=True
    )
    message = Message("t.scans", 0, 7, 0.0, 0, [], key, value, None)

    async def both() -> tuple[Any, Any]:
        return (await engine.runtime.scans_topic.decode(message),
                await theirs.decode(message))  # fmt: skip

    ours, expected = asyncio.run(both())
    assert isinstance(engine.runtime.scans_topic.schema, InputSchema)
    assert (type(ours.key), ours.key) == (type(expected.key), expected.key)
    assert (type(ours.value), ours.value) == (type(expected.value), expected.value)
    assert ours.message is message
