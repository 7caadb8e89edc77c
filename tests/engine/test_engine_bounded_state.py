"""Bounded state over the real broker (issue 10 H3, CONTRACT v1.2 "Bounded state").

10,000 scans on one order and 5,000 status records of one unit another order
visited: no table value reaches Kafka's 1 MB message limit, the worker does not
crash, the visit reported after the flood gets the alerts it would have got
before it, and a restarted worker recovers the same state and the same alerts:
it refuses one more scan of the full order and one more status of the full unit,
as the first worker did, and changes nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from chainwatch.replay import ReplayRun, no_progress, stop_workers
from chainwatch.settings import Settings
from streams.engine.limits import EngineLimits
from streams.engine.order_slot import OrderSlot
from streams.engine.unit_processor import UnitSlot

# 15,000 records through one worker, twice: minutes on a 2-core box, so opt-in with the
# other long broker runs (`make test-heavy`), not in every `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.heavy]

START = datetime(2027, 3, 1, tzinfo=UTC)
UNTIL = datetime(2027, 3, 4, tzinfo=UTC)
LIMIT = 1_000_000


def _t(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _order(order_id: str) -> dict[str, Any]:
    return {"topic": "orders", "key": order_id, "value": {
        "op": "created", "order_id": order_id, "customer_id": "C-1", "product": "crewneck",
        "quantity": 100, "placed_at": _t(0), "due_at": "2027-04-30T00:00:00Z"}}  # fmt: skip


def _scan(order_id: str, n: int, stage: str, action: str, unit: str, at: float) -> dict[str, Any]:
    return {"topic": "scans", "key": order_id, "value": {
        "event_id": f"{order_id}-{n}", "order_id": order_id, "stage": stage, "action": action,
        "unit_id": unit, "event_time": _t(at)}}  # fmt: skip


def _status(k: int) -> dict[str, Any]:
    return {"topic": "unit-status", "key": "DYE-H3", "value": {
        "event_id": f"u-{k}", "unit_id": "DYE-H3", "stage": "dyeing",
        "status": "down" if k % 2 == 0 else "up", "reason": "power_outage",
        "event_time": _t(14400 + 10 * k)}}  # fmt: skip


def _scenario(path: Path) -> tuple[Path, Path, Path]:
    """PO-H3 gets 10,000 scans; DYE-H3 5,000 status records; PO-V's visit there
    overlaps the unit's first two downtimes.

    Two parts: the orders, PO-H3's scans and the flood, then PO-V's scans (the
    first part is drained before the second is sent): the visit reaches the unit
    after all its status records, the order in which a unit that folded its
    oldest records would have lost the downtimes the visit overlaps. Its alerts
    must be those of the other order (tests/engine/test_engine_unit_state.py
    compares both orders on the processors). A third part, for the restarted
    worker: one more scan of PO-H3 and one more status of DYE-H3.
    """
    lines: list[dict[str, Any]] = [
        _order("PO-H3"),
        _order("PO-V"),
        _scan("PO-H3", 0, "yarn_sourcing", "started", "YARN-1", 3600),
        _scan("PO-H3", 1, "yarn_sourcing", "completed", "YARN-1", 7200),
        _scan("PO-H3", 2, "dyeing", "started", "DYE-A", 10800),
    ]
    visit = [
        _scan("PO-V", 0, "yarn_sourcing", "started", "YARN-1", 3600),
        _scan("PO-V", 1, "yarn_sourcing", "completed", "YARN-1", 7200),
        _scan("PO-V", 2, "dyeing", "started", "DYE-H3", 14400),
        _scan("PO-V", 3, "dyeing", "completed", "DYE-H3", 14400 + 35),
    ]
    scans = [  # duplicate starts and out-of-sequence scans, all with distinct ids
        _scan(
            "PO-H3",
            n,
            *(("dyeing", "started", "DYE-A") if n % 2 else ("yarn_sourcing", "started", "YARN-1")),
            10800 + n,
        )
        for n in range(3, 10_000)
    ]
    statuses = [_status(k) for k in range(5000)]
    for n, scan in enumerate(scans):
        lines.append(scan)
        if n < len(statuses):
            lines.append(statuses[n])
    beyond = [_scan("PO-H3", 10_000, "dyeing", "started", "DYE-A", 10800 + 10_000), _status(5000)]
    head, rest = path.with_suffix(".head.ndjson"), path.with_suffix(".rest.ndjson")
    after = path.with_suffix(".after.ndjson")
    head.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rest.write_text("".join(json.dumps(line) + "\n" for line in visit))
    after.write_text("".join(json.dumps(line) + "\n" for line in beyond))
    path.write_text(head.read_text() + rest.read_text())
    return head, rest, after


def _latest(bootstrap: str, topic: str) -> tuple[dict[str, bytes | None], int]:
    """Latest value per key of a topic, and the largest value ever written.

    Keys are text: a table's changelog key is the JSON of the key (`"PO-H3"`),
    an output topic's the raw id.
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        check_crcs=False,  # kafka-python's pure-Python CRC32C: minutes over ~200 MB of changelog
    )
    latest: dict[str, bytes | None] = {}
    largest = 0
    try:
        for record in consumer:
            key = record.key.decode()
            latest[json.loads(key) if key.startswith('"') else key] = record.value
            largest = max(largest, len(record.value or b""))
    finally:
        consumer.close()
    return latest, largest


def _values(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """Latest JSON value per key of an output topic (alerts, dead letters)."""
    latest, _ = _latest(bootstrap, topic)
    return {k: json.loads(v) for k, v in latest.items() if v is not None}


def _refused(letters: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(event_id, reason_code) of each dead letter, sorted."""
    return sorted(
        (json.loads(base64.b64decode(v["value_b64"]))["event_id"], v["reason_code"])
        for v in letters.values()
    )


@pytest.mark.timeout(900)  # 15,000 records twice through one worker: minutes on a busy 2-core box
def test_ten_thousand_scans_and_five_thousand_statuses_stay_bounded_across_a_restart(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    scenario = tmp_path / "h3.ndjson"
    head, rest, after = _scenario(scenario)
    run = ReplayRun(settings_factory(), scenario, partitions=2, progress=no_progress)
    bootstrap = run.settings.kafka.bootstrap
    app_id = run.settings.engine.app_id
    alerts_topic = f"{run.settings.kafka.topic_prefix}alerts"
    dead_topic = f"{run.settings.kafka.topic_prefix}dead-letter"
    try:
        run.prepare_topics()
        run.start_workers(1)
        run.wait_for_group(1)
        run.publish(part=head)
        run.wait_idle(timeout_s=600)  # every status of DYE-H3 taken before PO-V's visit
        run.publish(part=rest)
        run.finish(UNTIL, timeout_s=600)  # raises if the worker died on the way
        orders, order_max = _latest(bootstrap, f"{app_id}-orders-changelog")
        units, unit_max = _latest(bootstrap, f"{app_id}-units-changelog")
        alerts = _values(bootstrap, alerts_topic)
        dead = _values(bootstrap, dead_topic)

        stop_workers(run.workers)
        # records only a worker that recovered the full order and unit refuses: given the
        # final clock alone, a worker that recovered nothing wrote nothing either, and the
        # comparisons below held (tried with the restarted worker's tables renamed)
        run.start_workers(1, first=1)
        run.publish(part=after)
        run.finish(UNTIL, timeout_s=600)
        orders_after, _ = _latest(bootstrap, f"{app_id}-orders-changelog")
        units_after, _ = _latest(bootstrap, f"{app_id}-units-changelog")
        alerts_after = _values(bootstrap, alerts_topic)
        dead_after = _values(bootstrap, dead_topic)
    finally:
        run.close()

    assert order_max < LIMIT, f"largest order slot {order_max} B"
    assert unit_max < LIMIT, f"largest unit slot {unit_max} B"
    order = OrderSlot.from_json(json.loads(orders["PO-H3"] or b"{}"))
    assert len(order.facts.scans) == EngineLimits().max_scans_per_order
    unit = UnitSlot.from_json(json.loads(units["DYE-H3"] or b"{}"))
    limits = EngineLimits()
    # nothing ended a lookback (30 days) before the unit's clock: the first records
    # are kept up to the cap and the later ones refused in log order, not dropped
    assert [r.event_id for r in unit.records] == [f"u-{k}" for k in range(limits.max_unit_records)]
    # the scans and the statuses beyond the caps, refused for them
    assert _refused(dead) == sorted(
        [(f"PO-H3-{n}", "state_limit") for n in range(limits.max_scans_per_order, 10_000)]
        + [(f"u-{k}", "state_limit") for k in range(limits.max_unit_records, 5000)]
    )
    # the restarted worker refuses the next ones as the first would have, so it knows both full
    assert _refused({k: v for k, v in dead_after.items() if k not in dead}) == [
        ("PO-H3-10000", "state_limit"),
        ("u-5000", "state_limit"),
    ]
    assert dead_after.keys() >= dead.keys()
    assert orders_after == orders
    assert units_after == units
    assert alerts_after == alerts
    assert sum(a["type"] == "unit_down" for a in alerts.values()) == limits.max_unit_records // 2
    disrupted = [  # a visit first reported open overlapped more downtimes: retracted since
        a for a in alerts.values() if a["type"] == "order_disrupted" and a["status"] != "retracted"
    ]
    assert {a["order_id"] for a in disrupted} == {"PO-V"}
    # PO-V's visit overlaps the first two downtimes only, reported before or after them
    assert sorted(a["details"]["downtime_event_id"] for a in disrupted) == ["u-0", "u-2"]
