"""An event-clock worker commits as soon as a step leaves it nothing to read.

A replay waits at every event-time window's end until the group has committed
every record (`chainwatch.replay.wait_until_idle`); before, each of those waits
included the commit timer's interval. The engine's real agents run through
`agent.test_context()` (no broker): the consumer's commit and its "records left
to read" answer (`unread`, tested against the broker in
tests/foundation/test_kafka_transport.py) are stood in for, and the outputs
are captured at the producer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import pytest
from engine_helpers import capture_outputs, run_agents
from structlog.testing import capture_logs

from schemas.plan import load_plan
from schemas.validation import decode_input
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.topics import SCANS, TopicNames


def _scan(n: int) -> Any:
    value = {"event_id": f"e-{n}", "order_id": f"PO-{n}", "stage": "yarn_sourcing",
             "action": "started", "unit_id": "YARN-1",
             "event_time": f"2027-03-01T1{n}:00:00Z"}  # fmt: skip
    return decode_input(SCANS, json.dumps(value).encode(), plan=load_plan(None))


def _handled(engine: Engine) -> float:
    """Scans the agents have stepped through (`chainwatch_worker_records`)."""
    return sum(
        sample.value
        for family in engine.runtime.metrics.registry.collect()
        if family.name == "chainwatch_worker_records"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.parametrize("clock", ["event", "live"])
def test_a_step_that_leaves_nothing_to_read_is_committed_at_once_on_the_event_clock(
    tmp_path: Path, clock: Literal["event", "live"]
) -> None:
    app = create_app(f"drained-{clock}", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    config = EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock=clock,
                          batch_size=2, batch_most=8)  # fmt: skip
    engine = Engine(app, config)
    capture_outputs(engine.runtime)
    left_to_read = [True]
    commits: list[float] = []  # the scans handled when each commit began

    async def commit(*_args: Any, **_kwargs: Any) -> bool:
        commits.append(_handled(engine))
        return True

    stepped = asyncio.Event()
    count = engine.runtime._count

    def counted(*args: Any) -> None:  # each step ends by counting its records
        count(*args)
        stepped.set()

    engine.runtime._count = counted  # type: ignore[method-assign]

    async def until(handled: int) -> None:
        while True:
            stepped.clear()
            if _handled(engine) >= handled:
                return
            await asyncio.wait_for(stepped.wait(), timeout=30)

    async def run() -> None:
        consumer = app.consumer  # built on the running loop, as the stream would
        consumer.commit = commit  # type: ignore[method-assign]
        consumer.unread = lambda _topics: left_to_read[0]  # type: ignore[attr-defined]
        async with app.agents["scans"].test_context() as scans:
            await scans.put(_scan(1), key=b"PO-1", wait=False)  # more to read after it
            await until(1)
            left_to_read[0] = False
            await scans.put(_scan(2), key=b"PO-2", wait=False)  # the last there is
            await until(2)
            left_to_read[0] = True
            # the step after it is taken only once the batch before was acked (and,
            # on the event clock, committed)
            await scans.put(_scan(3), key=b"PO-3", wait=False)
            await until(3)

    run_agents(app, run())
    if clock == "event":
        assert commits == [2]  # once, after the step that left nothing to read
    else:
        assert commits == []  # a live worker's commits are faust's timer's


def test_a_drained_commit_that_never_ends_stops_the_worker_after_its_deadline(
    tmp_path: Path,
) -> None:
    """aiokafka's commit retries for ever while the coordinator is away, and the agent
    waited in it. It cannot be abandoned to the timer either (faust took the offsets out
    of its acked list: a gap no later commit passes), so it stops the worker as a failed
    commit does: what was not committed is read again on restart."""
    app = create_app("drained-stuck", bootstrap="localhost:1", partitions=1, data_dir=tmp_path)
    config = EngineConfig(names=TopicNames("t."), plan=load_plan(None), clock="event",
                          batch_size=2, batch_most=8, drained_commit_timeout_s=0.2)  # fmt: skip
    engine = Engine(app, config)
    capture_outputs(engine.runtime)
    crashed: asyncio.Future[BaseException] | None = None

    async def commit(*_args: Any, **_kwargs: Any) -> bool:
        await asyncio.Event().wait()  # a coordinator that never comes back
        return True

    async def crash(exc: BaseException) -> None:
        assert crashed is not None
        if not crashed.done():
            crashed.set_result(exc)

    outcome: list[BaseException] = []

    async def run() -> None:
        nonlocal crashed
        crashed = asyncio.get_running_loop().create_future()
        consumer = app.consumer
        consumer.commit = commit  # type: ignore[method-assign]
        consumer.crash = crash  # type: ignore[method-assign]
        consumer.unread = lambda _topics: False  # type: ignore[attr-defined]
        async with app.agents["scans"].test_context() as scans:
            await scans.put(_scan(1), key=b"PO-1", wait=False)  # nothing to read after it
            outcome.append(await asyncio.wait_for(crashed, timeout=30))

    with capture_logs() as logs:
        run_agents(app, run())
    assert [type(exc).__name__ for exc in outcome] == ["CommitTimedOut"]
    assert "took over 0.2 s" in str(outcome[0])
    assert [e["timeout_s"] for e in logs if e["event"] == "drained_commit_timed_out"] == [0.2]
