"""The worker's metrics and probes, on the registry an engine builds (no broker).

The end-to-end check against a real worker is in test_engine_live_clock.py (its worker).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from engine_helpers import BatchStream, capture_outputs, order_event

from chainwatch.errors import UserError
from chainwatch.free_port import free_port
from chainwatch.ops_server import OpsServer, bind_ops, serve_ops
from chainwatch.runners import WORKER_PORT_TRIES, serve_worker_ops
from chainwatch.settings import Settings
from schemas.dead_letter import ReasonCode
from schemas.plan import load_plan
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.engine.metrics import COMMIT_STUCK_S, STALL_S
from streams.topics import ORDERS, SCANS, TopicNames


def _engine(tmp_path: Path, app_id: str = "metrics-test") -> Engine:
    app = create_app(app_id, bootstrap="localhost:1", partitions=2, data_dir=tmp_path)
    return Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event"))


def _sample(engine: Engine, name: str, **labels: str) -> float | None:
    return engine.runtime.metrics.registry.get_sample_value(name, labels)


async def _drain(agent: Callable[[Any], AsyncIterator[None]], batches: list[list[Any]]) -> None:
    async for _ in agent(BatchStream(batches)):
        pass


@pytest.mark.slow
def test_records_are_counted_by_topic_and_outcome_and_timed(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    rt = engine.runtime
    produced = capture_outputs(rt)
    alert = {"alert_id": "a1", "type": "start_overdue", "status": "open"}

    async def handle(batch: Sequence[Any]) -> None:
        for event in batch:
            if event.value == b"bad":
                rejected = SimpleNamespace(raw=b"bad", errors=[], reason_code=ReasonCode.NOT_JSON)
                rt.dead_letter(ORDERS, event.message, rejected)  # type: ignore[arg-type]
            elif event.value == b"boom":
                raise RuntimeError("boom")
            else:
                rt.send_alerts([alert])

    asyncio.run(  # a batch's outcomes are counted per record
        _drain(
            rt.agent_body(handle, ORDERS),
            [
                [order_event(b"ok", 1), order_event(b"ok", 2), order_event(b"bad", 3)],
                [order_event(b"boom", 4)],
            ],
        )
    )
    records = "chainwatch_worker_records_total"
    assert _sample(engine, records, topic=ORDERS, outcome="ok") == 2
    assert _sample(engine, records, topic=ORDERS, outcome="dead_lettered") == 1
    assert _sample(engine, records, topic=ORDERS, outcome="processing_error") == 1
    assert _sample(engine, records, topic=SCANS, outcome="ok") == 0  # other agents: 0, present
    assert _sample(engine, "chainwatch_worker_processing_seconds_count", topic=ORDERS) == 4
    dead = "chainwatch_worker_dead_letters_total"
    assert _sample(engine, dead, reason="not_json") == 1
    assert _sample(engine, dead, reason="processing_error") == 1
    assert _sample(engine, dead, reason="state_limit") == 0
    published = "chainwatch_worker_alerts_published_total"
    assert _sample(engine, published, type="start_overdue", status="open") == 2

    rt.send_alerts([alert], reannounce=True)  # after a recovery: not a new alert
    asyncio.run(rt.outputs.flush())
    assert _sample(engine, published, type="start_overdue", status="open") == 2
    assert _sample(engine, "chainwatch_worker_alerts_reannounced_total") == 1
    assert [topic for topic, *_ in produced.sent] == [
        rt.out.alerts, rt.out.alerts, rt.out.dead_letters, rt.out.dead_letters, rt.out.alerts,
    ]  # fmt: skip


def test_two_engines_in_one_process_keep_their_own_series(tmp_path: Path) -> None:
    one, two = _engine(tmp_path / "1", "one"), _engine(tmp_path / "2", "two")
    assert one.runtime.metrics.registry is not two.runtime.metrics.registry
    one.runtime.metrics.dead_letter("not_json")
    assert _sample(one, "chainwatch_worker_dead_letters_total", reason="not_json") == 1
    assert _sample(two, "chainwatch_worker_dead_letters_total", reason="not_json") == 0


def test_deadline_index_size_and_oldest_due_deadline(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    rt = engine.runtime
    rt.clock.observe(0, 100_000)  # event clock of partition 0: T = 100 s
    rt.deadlines.schedule(0, 40_000, "PO-1")  # due 60 s ago, not fired yet
    rt.deadlines.schedule(0, 90_000, "PO-2")
    rt.deadlines.schedule(0, 500_000, "PO-3")  # not due
    rt.deadlines.schedule(1, 500_000, "PO-4")
    asyncio.run(engine.observer.refresh())
    entries = "chainwatch_worker_deadline_index_entries"
    assert _sample(engine, entries, partition="0") == 3
    assert _sample(engine, entries, partition="1") == 1
    overdue = "chainwatch_worker_deadline_overdue_seconds"
    assert _sample(engine, overdue, partition="0") == 60
    assert _sample(engine, overdue, partition="1") == 0
    rt.order_table.data.data[b"PO-1"] = b"{}"  # a key in the memory store
    asyncio.run(engine.observer.refresh())
    assert _sample(engine, "chainwatch_worker_table_keys", table="orders") == 1
    assert _sample(engine, "chainwatch_worker_table_keys", table="units") == 0


@pytest.mark.slow
def test_a_held_live_clock_is_reported_per_partition_until_released(tmp_path: Path) -> None:
    app = create_app("metrics-held", bootstrap="localhost:1", partitions=2, data_dir=tmp_path)
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="live"))
    rt = engine.runtime
    rt.clock.hold([1])  # a partition new to the worker, its backlog not read yet
    rt.deadlines.schedule(1, 1_000, "PO-1")  # long due by the wall clock
    asyncio.run(engine.observer.refresh())
    held = "chainwatch_worker_clock_held_seconds"
    assert (_sample(engine, held, partition="1") or -1) >= 0
    assert _sample(engine, held, partition="0") is None
    # the deadline waits on the held clock: the gauge says how long by the wall
    assert (_sample(engine, "chainwatch_worker_deadline_overdue_seconds", partition="1") or 0) > 1e6
    rt.clock.release(1)
    asyncio.run(engine.observer.refresh())
    assert _sample(engine, held, partition="1") == 0  # a series a dashboard can show flat


def test_a_scrape_before_the_start_builds_no_consumer(tmp_path: Path) -> None:
    """faust's `app.consumer` builds a consumer, with its thread's event loop, on first use:
    a metrics refresh before the worker started must only read (it leaked that loop)."""
    engine = _engine(tmp_path)
    asyncio.run(engine.observer.refresh())
    assert _sample(engine, "chainwatch_worker_ready") == 1
    assert engine.runtime.app._consumer is None


def test_probes_say_why_the_worker_is_not_ready(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    observer, app = engine.observer, engine.runtime.app
    assert observer.health() == (True, {"started": False})
    ready, details = observer.ready()
    assert not ready
    assert details["reasons"] == ["starting: table recovery not finished"]

    asyncio.run(observer.refresh())
    assert observer.ready() == (True, {"reasons": []})
    assert _sample(engine, "chainwatch_worker_ready") == 1
    app.rebalancing, app.in_recovery = True, True
    assert observer.ready()[1]["reasons"] == ["rebalancing", "recovering tables"]
    app.rebalancing, app.in_recovery = False, False

    assert observer.refreshed_at is not None
    observer.refreshed_at -= STALL_S + 1  # the loop stopped turning
    assert observer.health()[0] is False
    assert "event loop stalled" in observer.ready()[1]["reasons"][0]
    # the gauges are the stalled loop's last snapshot; the one that says ready must not be
    assert _sample(engine, "chainwatch_worker_ready") == 0


def test_a_worker_whose_kafka_went_away_is_not_ready(tmp_path: Path) -> None:
    """Started workers stayed ready (and `chainwatch_worker_ready` 1) through a broker
    outage: the probes knew only of the start-up wait."""
    from chainwatch.kafka_watch import KafkaWatch

    engine = _engine(tmp_path)
    asyncio.run(engine.observer.refresh())
    answers = [False, True]
    watch = KafkaWatch("127.0.0.1:19092", probe=lambda: answers.pop(0))
    engine.observer.kafka_problem = watch.problem
    assert engine.observer.ready() == (True, {"reasons": []})
    watch.check()  # Kafka does not answer
    ready, details = engine.observer.ready()
    assert not ready
    assert details["reasons"][0].startswith("Kafka at 127.0.0.1:19092 does not answer (since ")
    asyncio.run(engine.observer.refresh())
    assert _sample(engine, "chainwatch_worker_ready") == 0
    watch.check()  # it answers again
    assert engine.observer.ready() == (True, {"reasons": []})


def test_the_probe_says_ready_as_the_app_starts_not_a_refresh_interval_later(
    tmp_path: Path,
) -> None:
    """faust starts an app's tasks once table recovery is done, and its timers first
    sleep their interval: refreshed only by its timer, a started worker answered
    "starting" for 2 s more, and every replay waited that long before publishing."""
    engine = _engine(tmp_path)
    observer = engine.observer
    at_start = [
        task
        for task in engine.runtime.app._app_tasks  # type: ignore[attr-defined]
        if getattr(task, "__wrapped__", None) == observer.refresh  # not the timer's loop
    ]
    assert len(at_start) == 1
    assert not observer.ready()[0]
    asyncio.run(at_start[0]())
    assert observer.ready() == (True, {"reasons": []})


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_worker_endpoints_serve_the_engines_registry_and_probes(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    settings = Settings(data_dir=tmp_path, engine={"metrics_port": free_port()})
    server = serve_worker_ops(settings, engine)
    assert server is not None
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert server.server_address[0] == "127.0.0.1"  # loopback by default
        status, body = _get(f"{base}/metrics")
        assert status == 200
        assert b"chainwatch_worker_records_total{" in body
        assert b"process_resident_memory_bytes " in body  # the process's, as the sink's
        assert _get(f"{base}/healthz")[0] == 200
        status, body = _get(f"{base}/readyz")
        assert status == 503
        assert json.loads(body) == {
            "ready": False,
            "reasons": ["starting: table recovery not finished"],
        }
        asyncio.run(engine.observer.refresh())
        assert _get(f"{base}/readyz")[0] == 200
        assert _get(f"{base}/nothing")[0] == 404
    finally:
        server.stop()


def test_worker_endpoints_are_off_with_port_0(tmp_path: Path) -> None:
    assert Settings().engine.metrics_port == 9460  # the documented default
    settings = Settings(data_dir=tmp_path, engine={"metrics_port": 0})
    assert serve_worker_ops(settings, _engine(tmp_path)) is None


def _two_free_ports() -> int:
    """A port p with p + 1 free too, below the kernel's ephemeral range.

    A port the kernel handed out (bind to 0) and that was closed again can be taken
    the next moment as the source port of any outgoing connection on this host (the
    suite's Kafka clients open many): the test then found its own port busy. Below
    32768 only listeners that ask for a port by number compete.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 28000)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", base))
                second.bind(("127.0.0.1", base + 1))
        except OSError:
            continue
        return base
    raise AssertionError("no two consecutive free ports in 20000-28000")


def test_workers_on_one_host_take_the_next_free_port_then_any() -> None:
    base = _two_free_ports()
    servers: list[OpsServer] = []
    try:
        servers.append(bind_ops("127.0.0.1", base, tries=2))
        servers.append(bind_ops("127.0.0.1", base, tries=2))
        assert [s.port for s in servers] == [base, base + 1]
        with pytest.raises(
            UserError, match=re.escape(f"127.0.0.1:{base}-{base + 1}: Address already in use")
        ):
            bind_ops("127.0.0.1", base, tries=2)
        servers.append(bind_ops("127.0.0.1", base, tries=2, any_port_last=True))
        assert servers[-1].port not in (base, base + 1)
    finally:
        for server in servers:
            server.server_close()
    assert WORKER_PORT_TRIES == 16
    with pytest.raises(
        UserError, match=re.escape("192.0.2.1")
    ):  # an address not of this host: one line
        bind_ops("192.0.2.1", base, tries=16, any_port_last=True)


def test_a_sink_or_notifier_server_has_no_readiness() -> None:
    server = serve_ops("127.0.0.1", free_port())
    try:
        assert _get(f"http://127.0.0.1:{server.port}/healthz") == (200, b'{"alive": true}\n')
        assert _get(f"http://127.0.0.1:{server.port}/readyz")[0] == 404
    finally:
        server.stop()


def test_a_commit_the_coordinator_does_not_answer_makes_the_worker_not_ready(
    tmp_path: Path,
) -> None:
    """faust's offset commit waits for the group coordinator with no deadline; a
    coordinator on a broker the Kafka probe does not ask was gone unnoticed."""
    from structlog.testing import capture_logs

    engine = _engine(tmp_path)
    observer, app = engine.observer, engine.runtime.app
    consumer = SimpleNamespace(_commit_fut=object())  # faust's future of a commit under way
    app._consumer = consumer
    with capture_logs() as logged:
        asyncio.run(observer.refresh())
        assert observer.ready() == (True, {"reasons": []})  # a commit takes milliseconds
        assert observer.commit_since is not None
        observer.commit_since -= COMMIT_STUCK_S + 1  # still the same commit, 31 s on
        asyncio.run(observer.refresh())
        asyncio.run(observer.refresh())
        ready, details = observer.ready()
        assert not ready
        assert details["reasons"] == ["offset commit unanswered for 31 s"]
        assert (_sample(engine, "chainwatch_worker_commit_pending_seconds") or 0) >= 31
        assert _sample(engine, "chainwatch_worker_ready") == 0
        consumer._commit_fut = None  # answered
        asyncio.run(observer.refresh())
    assert observer.ready() == (True, {"reasons": []})
    assert _sample(engine, "chainwatch_worker_commit_pending_seconds") == 0
    events = [e["event"] for e in logged if e["event"].startswith("worker_commit")]
    assert events == ["worker_commit_stuck", "worker_commit_answered"]  # once each


def test_each_new_commit_is_timed_from_when_it_began(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    observer, app = engine.observer, engine.runtime.app
    app._consumer = consumer = SimpleNamespace(_commit_fut=object())
    asyncio.run(observer.refresh())
    assert observer.commit_since is not None
    observer.commit_since -= COMMIT_STUCK_S + 1
    consumer._commit_fut = object()  # that one ended, the next one is under way
    asyncio.run(observer.refresh())
    assert observer.commit_pending_s() < COMMIT_STUCK_S
    assert observer.ready()[0]
