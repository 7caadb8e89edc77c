"""A worker that recovers a unit's tables mid-run (a rebalance) rebuilds its occupancy
index (streams.engine.occupancy_index) before it reads them.

The index is built lazily, so a worker that recovers before it first reads it needs
no callback; a worker that has run does: faust's recovery writes the entries of the
partitions it takes over into the table's store, not through `UnitAgents.apply`, and
an index left as it was gives their units' status records none of them. The
engine's real agents, runtime and tables (outputs captured at the producer, no
broker), driven as faust drives them: records into the agents, then the recovered
values written to the store and the table's recovery callbacks called.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from engine_helpers import CapturingProducer, capture_outputs

from schemas.plan import load_plan
from schemas.validation import decode_input
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.engine.messages import Occupancy, decode_order_inbox, encode_bundle
from streams.rules.facts import to_ms
from streams.topics import UNIT_STATUS, TopicNames

UNIT, OTHER = "DYE-2", "DYE-9"


class _Event:
    """A fetched record as the agents read it (weak-referenceable, as faust's events are)."""

    def __init__(self, topic: str, key: bytes | None, raw: bytes, offset: int, value: Any) -> None:
        self.message = SimpleNamespace(
            topic=topic, key=key, value=raw, partition=0, offset=offset, tp=(topic, 0)
        )
        self.value = value


def _engine(tmp_path: Path) -> tuple[Engine, CapturingProducer]:
    app = create_app("unit-recovery", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event"))
    engine.runtime.active_partitions = lambda _topic: {0}  # type: ignore[method-assign]
    return engine, capture_outputs(engine.runtime)


def _status(unit_id: str, n: int, status: str, at: str) -> _Event:
    raw = json.dumps({"event_id": f"{unit_id}-{n}", "unit_id": unit_id, "stage": "dyeing",
                      "status": status, "reason": "power_outage",
                      "event_time": f"2027-03-01T{at}Z"}).encode()  # fmt: skip
    value = decode_input(UNIT_STATUS, raw, plan=load_plan(None))
    return _Event("t.unit-status", unit_id.encode(), raw, n, value)


def _ms(at: str) -> int:
    return to_ms(datetime.fromisoformat(f"2027-03-01T{at}+00:00"))


async def _step(
    engine: Engine,
    *,
    status: _Event | None = None,
    reports: tuple[int, list[Occupancy]] | None = None,
) -> None:
    """One step of the unit agents (a status record, or a bundle of reports at its inbox
    offset), its outputs sent."""
    units = engine.units
    if status is not None:
        await units.on_statuses([status])
    if reports is not None:
        offset, occupancies = reports
        bundle = encode_bundle([occ.encode() for occ in occupancies])
        await units.on_inbox([_Event("t.unit-inbox", None, bundle, offset, bundle)])
    await engine.runtime.outputs.flush()


def _visit(order_id: str, start: str, end: str | None) -> Occupancy:
    return Occupancy(order_id, UNIT, 1, [["dyeing", 1, _ms(start), end and _ms(end)]])


def _sent_since(out: CapturingProducer, since: int) -> dict[str, list[bytes]]:
    """The values sent from the `since`th on, by topic (the tables' changelogs too)."""
    sent: dict[str, list[bytes]] = {}
    for topic, _, value, _ in out.sent[since:]:
        sent.setdefault(topic, []).append(value or b"")
    return sent


def test_a_worker_that_takes_a_unit_over_mid_run_reads_its_recovered_entries(
    tmp_path: Path,
) -> None:
    """The unit went down with two orders in progress on the worker that had it; the
    worker it moves to has run (its index is built) and recovers the unit's value and
    entries. The unit's `up` then answers both orders and lists them in the resolved
    alert, as the first worker does with the same `up` (without the rebuild: no
    answers, and an alert with no orders in progress)."""
    before, before_out = _engine(tmp_path / "before")
    after, after_out = _engine(tmp_path / "after")
    since: dict[str, int] = {}

    async def main() -> None:
        await _step(before, status=_status(UNIT, 0, "down", "10:00:00"))
        visits = [_visit("PO-1", "10:30:00", "11:00:00"), _visit("PO-2", "09:00:00", None)]
        await _step(before, reports=(0, visits))
        await _step(after, status=_status(OTHER, 0, "down", "10:00:00"))  # it has run
        assert after.units.index().of(UNIT) == {}
        # the rebalance: faust writes the unit's recovered values into the stores
        for name in ("unit_table", "occupancy_table"):
            for key, value in getattr(before.runtime, name).data.items():
                getattr(after.runtime, name).data[key] = value
        for table in (after.runtime.occupancy_table, after.runtime.unit_table):
            await table.call_recover_callbacks()
        since["before"], since["after"] = len(before_out.sent), len(after_out.sent)
        for engine in (before, after):
            await _step(engine, status=_status(UNIT, 1, "up", "12:00:00"))

    asyncio.run(main())
    up_before = _sent_since(before_out, since["before"])
    up_after = _sent_since(after_out, since["after"])
    answered = sorted(
        answer.order_id
        for value in up_after.get(after.runtime.out.order_inbox, [])
        for answer in decode_order_inbox(value)
    )
    assert answered == ["PO-1", "PO-2"]
    alerts = [orjson.loads(v) for v in up_after[after.runtime.out.alerts]]
    assert [(a["type"], a["status"]) for a in alerts] == [("unit_down", "resolved")]
    assert alerts[0]["details"]["orders_in_progress"] == ["PO-1", "PO-2"]
    assert up_after == up_before
