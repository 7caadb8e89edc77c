"""One smoke test of the engine's real faust agents through `agent.test_context()`.

No broker: the outputs are captured at the producer (`CapturingProducer`); the
agents, codecs-to-processors path, tables, dead-letter wrapper and the sends
(`OutputSender`) are production's.
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
from streams.engine.messages import ORDER_INBOX, decode_unit_inbox
from streams.engine.order_slot import OrderSlot
from streams.topics import SCANS, TopicNames

OUTPUTS = ("alerts", "state", "dead_letters", "order_inbox", "customer_inbox", "unit_inbox")


def _scan(order_id: str) -> Any:
    value = {"event_id": "e-1", "order_id": order_id, "stage": "yarn_sourcing",
             "action": "started", "unit_id": "YARN-1",
             "event_time": "2027-03-01T10:00:00Z"}  # fmt: skip
    return decode_input("scans", json.dumps(value).encode(), plan=load_plan(None))


def test_a_scan_through_the_faust_agent_is_stored_and_published(tmp_path: Path) -> None:
    app = create_app("ctx-test", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event"))
    produced = capture_outputs(engine.runtime)

    async def run() -> None:
        async with app.agents["scans"].test_context() as scans:
            await scans.put(_scan("PO-1"), key=b"PO-1")
            await scans.put(_scan("PO-1"), key=b"PO-2")  # mis-keyed
        async with app.agents["order-inbox"].test_context() as inbox:
            await inbox.put(b"not json", key=b"PO-1")  # raises inside: dead-lettered

    run_agents(app, run())
    out = engine.runtime.out
    sent = {name: produced.keyed(getattr(out, name)) for name in OUTPUTS}
    slot = OrderSlot.from_json(orjson.loads(engine.runtime.order_table["PO-1"]))
    assert [s.event_id for s in slot.facts.scans] == ["e-1"]
    [(key, snapshot)] = sent["state"]
    assert key == b"PO-1"
    assert orjson.loads(snapshot)["stage"] == "yarn_sourcing"
    [(key, bundle)] = sent["unit_inbox"]
    assert key is None  # a bundle: sent to the partition of its messages' keys
    assert [occ.unit_id for occ in decode_unit_inbox(bundle)] == ["YARN-1"]
    letters = [DeadLetter.model_validate_json(v) for _, v in sent["dead_letters"]]
    assert [d.reason_code for d in letters] == [
        ReasonCode.KEY_MISMATCH,
        ReasonCode.PROCESSING_ERROR,
    ]
    records = {
        (sample.labels["topic"], sample.labels["outcome"]): sample.value
        for family in engine.runtime.metrics.registry.collect()
        if family.name == "chainwatch_worker_records"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.value
    }
    assert records == {
        (SCANS, "ok"): 1,
        (SCANS, "dead_lettered"): 1,
        (ORDER_INBOX, "processing_error"): 1,
    }
