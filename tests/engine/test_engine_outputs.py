"""The engine's outputs, as `OutputSender` hands them to the producer (no broker).

The producer is replaced at `send_tracked`, the seam below which only aiokafka
runs (tests/foundation/test_kafka_transport.py covers that part with a broker):
which topic, key and value each output gets, and in which order, is production's.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from engine_helpers import capture_outputs

from schemas.dead_letter import DeadLetter, DeadLetterSource, ReasonCode
from schemas.plan import load_plan
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.engine.messages import Occupancy, Subscription
from streams.engine.order_processor import Effects
from streams.topics import TopicNames


def _engine(tmp_path: Path) -> Engine:
    app = create_app("outputs-test", bootstrap="localhost:1", partitions=2, data_dir=tmp_path)
    return Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event"))


def test_an_orders_effects_go_to_their_topics_with_their_keys_in_order(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    alerts = [{"alert_id": f"a{i}", "type": "start_overdue", "status": "open"} for i in (1, 2)]
    source = DeadLetterSource(kind="kafka", topic="scans", partition=1, offset=7)
    letter = DeadLetter.build(b"{", source, [], ReasonCode.NOT_JSON, datetime.now(UTC))
    effects = Effects(
        alerts=alerts,
        snapshot=b'{"order_id":"PO-1"}',
        dead_letters=[letter],
        subscriptions=[Subscription("PO-1", "C-9", subscribe=True)],
        occupancy=[Occupancy("PO-1", "KNIT-2", 3, forget=True)],
    )
    slot: Any = SimpleNamespace(facts=SimpleNamespace(order_id="PO-1"))  # nothing stored

    asyncio.run(engine.orders.apply(slot, effects))

    out = rt.out
    assert [(topic, key, partition) for topic, key, _, partition in produced.sent] == [
        ("t.alerts", b"a1", None),
        ("t.alerts", b"a2", None),
        ("t.order-state", b"PO-1", None),
        ("t.dead-letter", letter.dead_letter_id.encode(), None),
        (out.customer_inbox, b"C-9", None),
        (out.unit_inbox, b"KNIT-2", None),
    ]  # fmt: skip
    values = [value for _, _, value, _ in produced.sent]
    assert [orjson.loads(v) for v in values[:2]] == alerts
    assert values[2] == effects.snapshot
    assert values[3] == letter.encode()
    assert values[4:] == [effects.subscriptions[0].encode(), effects.occupancy[0].encode()]
    assert out.customer_inbox == "outputs-test-customer-inbox"
    assert out.unit_inbox == "outputs-test-unit-inbox"


def test_a_send_that_fails_raises_into_the_step(tmp_path: Path) -> None:
    """An output that cannot be handed to the producer is not skipped: the step fails
    (the agent then handles the records alone and dead-letters the failing one)."""
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)

    async def refuse(topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        raise OSError("no metadata")

    produced.send_tracked = refuse  # type: ignore[method-assign]
    with pytest.raises(OSError, match="no metadata"):
        asyncio.run(rt.send_alerts([{"alert_id": "a1", "type": "start_overdue", "status": "open"}]))
    published = "chainwatch_worker_alerts_published_total"
    labels = {"type": "start_overdue", "status": "open"}
    assert not rt.metrics.registry.get_sample_value(published, labels)  # not counted as sent
