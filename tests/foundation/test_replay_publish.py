"""`chainwatch replay` publishes a scenario as the file says; a line Kafka will not take
is a dead letter, never the end of the replay (CONTRACT v1.2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from samples import customer, scan

from chainwatch.replay import no_progress, publish_scenario, read_records, read_topic
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings
from schemas.dead_letter import DeadLetter, ReasonCode
from streams.partitioning import partition_of
from streams.topics import DEAD_LETTER, SCANS


def test_a_line_too_large_for_kafka_is_a_dead_letter_and_the_replay_goes_on(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    prepare_topics(settings)
    first, last = scan(event_id="e-1"), scan(event_id="e-2")
    huge = customer(notes="x" * 3_000_000)  # valid, and over Kafka's 1 MiB
    lines = [
        {"topic": "scans", "key": first["order_id"], "value": first},
        {"topic": "crm.customers", "key": huge["customer_id"], "value": huge},
        {"topic": "scans", "key": last["order_id"], "value": last},
    ]
    scenario = tmp_path / "huge.ndjson"
    scenario.write_text("".join(json.dumps(line) + "\n" for line in lines))

    published, dead, _ = asyncio.run(publish_scenario(settings, scenario, no_progress))

    assert (published, dead) == (2, 1)
    scans = [json.loads(v or b"") for _, v in asyncio.run(read_topic(settings, SCANS))]
    assert [s["event_id"] for s in scans] == ["e-1", "e-2"]
    (letter,) = [
        DeadLetter.model_validate_json(v or b"")
        for _, v in asyncio.run(read_topic(settings, DEAD_LETTER))
    ]
    assert letter.reason_code is ReasonCode.PROCESSING_ERROR
    assert letter.source.line == 2
    assert letter.truncated


def test_a_keyless_line_is_published_to_its_ids_partition(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """The engine dead-letters a record read from another partition than its id's;
    Kafka's default partitioner spreads keyless records over all of them."""
    settings = settings_factory()
    prepare_topics(settings)
    scans = [scan(event_id=f"e-{n}", order_id=f"PO-{n}") for n in range(24)]
    scenario = tmp_path / "keyless.ndjson"
    scenario.write_text("".join(json.dumps({"topic": "scans", "value": s}) + "\n" for s in scans))

    published, dead, _ = asyncio.run(publish_scenario(settings, scenario, no_progress))

    assert (published, dead) == (24, 0)
    records = asyncio.run(read_records(settings, SCANS))
    assert len(records) == 24
    for record in records:
        assert record.key is None
        order_id = json.loads(record.value)["order_id"]
        assert record.partition == partition_of(order_id.encode(), settings.kafka.partitions)
