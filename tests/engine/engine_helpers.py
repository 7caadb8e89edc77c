"""Shared steps of the engine tests: compare replays with the in-memory oracle, and
capture the engine's outputs in tests without a broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
from aiokafka.errors import MessageSizeTooLargeError

from chainwatch.replay import scenario_texts
from schemas.plan import SlaPlan, load_plan
from streams.codecs import InputCodec
from streams.engine.output_sender import OutputSender
from streams.engine.runtime import EngineRuntime
from streams.partitioning import partition_of
from streams.rules.oracle import run_scenario


def simulate(path: Path, *, days: int, orders_per_day: int, seed: int) -> Path:
    """A scenario from the project's simulator (a subprocess, like a user would run it)."""
    subprocess.run(
        [
            sys.executable, "-m", "chainwatch", "simulate", "--out", str(path),
            "--days", str(days), "--orders-per-day", str(orders_per_day), "--seed", str(seed),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return path


def reference_alerts(scenario: Path, until: datetime) -> tuple[list[dict[str, Any]], int]:
    """What any correct engine must end with: the pure rules over the whole file at once,
    its lines read as the replay reads them (`scenario_texts`: a byte order mark is none
    of the line's)."""
    result = run_scenario(scenario_texts(scenario), load_plan(None), until)
    return [a.model_dump(mode="json") for a in result.alerts], result.dead_letters


def by_id(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["alert_id"]: a for a in alerts}


def alert_differences(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str:
    """What differs between two alert lists, field by field ('' when they are the same).

    A bare dict comparison of ~100 alerts truncates to "Differing items: ..." and
    hides which field moved; under load, that field is the whole diagnosis.
    """
    got, want = by_id(actual), by_id(expected)
    lines = [f"missing: {want[k]}" for k in sorted(want.keys() - got.keys())]
    lines += [f"unexpected: {got[k]}" for k in sorted(got.keys() - want.keys())]
    for key in sorted(got.keys() & want.keys()):
        fields = sorted(
            f for f in got[key].keys() | want[key].keys() if got[key].get(f) != want[key].get(f)
        )
        if fields:
            changed = ", ".join(f"{f}: {got[key].get(f)!r} != {want[key].get(f)!r}" for f in fields)
            lines.append(
                f"{got[key]['type']} {got[key].get('order_id') or got[key].get('unit_id')}"
                f" ({key[:12]}): {changed}"
            )
    return "\n".join(lines)


class CapturingProducer:
    """Stands in for the worker's producer where no broker runs: keeps every output in order.

    Only `OutputSender`'s seam (`send_batch_tracked`, `send_tracked` for ticks, the
    key partitioner and the size check) is replaced; everything above it - which
    topic, key, value and partition each output gets - is production's. Keys are
    partitioned as Kafka's default partitioner does (murmur2) over `partitions`.
    """

    def __init__(self, partitions: int = 1, max_message_bytes: int = 1_048_576) -> None:
        self.partitions = partitions
        self.max_message_bytes = max_message_bytes
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.batches: list[tuple[str, int, int]] = []
        """(topic, partition, records) of every batch appended, in order."""
        self.refused: list[str] = []

    async def send_tracked(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, partition))
        return asyncio.get_running_loop().create_future()

    async def send_batch_tracked(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[asyncio.Future[Any], int]]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.extend((topic, key, value, partition) for key, value in records)
        self.batches.append((topic, partition, len(records)))
        return [(delivery, len(records))]

    async def key_partitioner(self, topic: str) -> Callable[[bytes | None], int]:
        return lambda key: 0 if key is None else partition_of(key, self.partitions)

    def check_size(self, key: bytes | None, value: bytes | None) -> None:
        if len(key or b"") + len(value or b"") > self.max_message_bytes:
            raise MessageSizeTooLargeError("over max_request_size")

    def refuse_commit(self, reason: str) -> None:
        self.refused.append(reason)

    def keyed(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        """(key, value) of every message sent to `topic`, in the order sent."""
        return [(key, value) for name, key, value, _ in self.sent if name == topic]


def capture_outputs(runtime: EngineRuntime) -> CapturingProducer:
    producer = CapturingProducer(partitions=runtime.app.conf.topic_partitions)
    runtime.outputs = OutputSender(lambda: producer)
    return producer


def run_agents(app: Any, main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run(main)` for agents driven through `agent.test_context()` (no broker).

    Their streams build the app's consumer but never start it, so its thread's
    event loop is closed here; left to the garbage collector, it is a
    ResourceWarning in whichever test runs then.
    """
    try:
        asyncio.run(main)
    finally:
        consumer = app._consumer
        if consumer is not None:
            consumer._thread.thread_loop.close()


class RawInputChannel(faust.Channel):  # type: ignore[misc]
    """A test channel that decodes values as the input topic does, keeping the message's bytes.

    `agent.test_context()` feeds an agent through a plain channel, which hands the
    value put as it is: a test that puts a decoded record leaves the message without
    the raw bytes production has (what a forwarded copy or a dead letter carries).
    Put raw bytes through this one instead.
    """

    def __init__(self, app: Any, topic: str, plan: SlaPlan | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.topic, self.plan = topic, plan if plan is not None else load_plan(None)
        self.codec = InputCodec(topic, self.plan)

    def _clone_args(self) -> dict[str, Any]:
        return {**super()._clone_args(), "topic": self.topic, "plan": self.plan}

    async def decode(self, message: Any, *, propagate: bool = False) -> Any:
        raw = message.value
        value = None if raw is None else self.codec.loads(raw)
        return self._create_event(message.key, value, message.headers, message=message)


class BatchStream:
    """Stands in for the faust stream an agent iterates (the agent body is production's):
    its batches, as `take_events` gives them."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self._batches = batches

    async def take_events(self, _max: int, _within: float) -> AsyncIterator[list[Any]]:
        for batch in self._batches:
            yield batch


def order_event(value: bytes, offset: int) -> Any:
    """A faust event of order PO-1's partition 0 with the raw `value` at `offset`."""
    message = SimpleNamespace(key=b"PO-1", value=value, partition=0, offset=offset)
    return SimpleNamespace(message=message, value=value)
