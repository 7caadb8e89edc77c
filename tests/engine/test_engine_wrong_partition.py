"""A record read from another partition than its id's is a dead letter, never a second state.

Kafka's default partitioner spreads keyless records over every partition. The
engine wrote such a scan's order to the changelog of the partition it was read
from as well as its own: after a restart the stale copy could win and the
order's later scans were gone. Through the real faust agents, no broker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from engine_helpers import capture_outputs, run_agents

from schemas.dead_letter import DeadLetter, ReasonCode
from schemas.plan import load_plan
from schemas.validation import decode_input
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.engine.order_slot import OrderSlot
from streams.partitioning import partition_of
from streams.topics import TopicNames

PARTITIONS = 4
ORDER = "PO-1"
HOME = partition_of(ORDER.encode(), PARTITIONS)
ELSEWHERE = (HOME + 1) % PARTITIONS


def _scan(event_id: str) -> Any:
    value = {"event_id": event_id, "order_id": ORDER, "stage": "yarn_sourcing",
             "action": "started", "unit_id": "YARN-1",
             "event_time": "2027-03-01T10:00:00Z"}  # fmt: skip
    return decode_input("scans", json.dumps(value).encode(), plan=load_plan(None))


def test_a_record_off_its_ids_partition_is_dead_lettered(tmp_path: Path) -> None:
    app = create_app("wrong-partition", bootstrap="localhost:1", partitions=PARTITIONS,
                     data_dir=tmp_path)  # fmt: skip
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event"))
    produced = capture_outputs(engine.runtime)

    async def run() -> None:
        async with app.agents["scans"].test_context() as scans:
            await scans.put(_scan("keyed"), key=ORDER.encode(), partition=HOME)
            await scans.put(_scan("keyless-home"), key=None, partition=HOME)
            await scans.put(_scan("keyless-away"), key=None, partition=ELSEWHERE)
            await scans.put(_scan("keyed-away"), key=ORDER.encode(), partition=ELSEWHERE)

    run_agents(app, run())
    slot = OrderSlot.from_json(orjson.loads(engine.runtime.order_table[ORDER]))
    assert [s.event_id for s in slot.facts.scans] == ["keyed", "keyless-home"]
    assert slot.partition == HOME
    changelogs = {p for t, _, _, p in produced.sent if t.endswith("-orders-changelog")}
    assert changelogs == {HOME}
    letters = [DeadLetter.model_validate_json(v) for _, v in produced.keyed("t.dead-letter")]
    assert [(d.reason_code, d.source.partition) for d in letters] == [
        (ReasonCode.KEY_MISMATCH, ELSEWHERE),
        (ReasonCode.KEY_MISMATCH, ELSEWHERE),
    ]
    assert [d.errors[0].type for d in letters] == ["wrong_partition", "wrong_partition"]
    assert f"not on partition {HOME} where" in letters[0].reason
    assert "no key" in letters[0].reason
    assert "no key" not in letters[1].reason
