"""Benchmark: what the worker's per-record metrics cost (issue 11 item 4), no Kafka.

    .venv/bin/python bench/metrics_overhead.py [--records 200000] [--batch 2000] [--repeat 5]

Drives the engine's agent loop (`EngineRuntime.agent_body`: batches of
`--batch` records, the turn lock, the outcome counters, the processing-time
histogram) with a handler that does nothing, next to the same loop without
the metrics, and prints the difference per record: the upper bound of what the
metrics add to a record, whatever the engine does with it. Compare with the
engine's own cost per record (bench/engine.py, bench/engine_pure.py).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from schemas.plan import load_plan
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.topics import SCANS, TopicNames


class _Stream:
    def __init__(self, events: list[Any], batch: int) -> None:
        self._events = events
        self._batch = batch

    async def take_events(self, _max: int, _within: float) -> AsyncIterator[list[Any]]:
        for start in range(0, len(self._events), self._batch):
            yield self._events[start : start + self._batch]


async def _nothing(events: Sequence[Any]) -> None:
    return None


def _bare_body(rt: Any) -> Any:
    """The agent body without metrics."""

    async def agent(stream: Any) -> AsyncIterator[None]:
        async for events in stream.take_events(0, 0):
            async with rt.turn:
                current = [e for e in events if rt.owned(e.message)]
                if current:
                    await rt.guarded(SCANS, current, _nothing, lambda e: e.message)
            yield None

    return agent


async def _drive(agent: Any, events: list[Any], batch: int) -> float:
    started = time.process_time()
    async for _ in agent(_Stream(events, batch)):
        pass
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app("bench-metrics", bootstrap="localhost:1", partitions=1, data_dir=Path(tmp))
        engine = Engine(app, EngineConfig(names=TopicNames("b."), plan=load_plan(None)))
        rt = engine.runtime
        event = SimpleNamespace(message=SimpleNamespace(partition=0, offset=0, key=None))
        events = [event] * args.records
        bare, metered = [], []
        for _ in range(args.repeat):  # interleaved, best of each: the machine is shared
            bare.append(asyncio.run(_drive(_bare_body(rt), events, args.batch)))
            metered.append(asyncio.run(_drive(rt.agent_body(_nothing, SCANS), events, args.batch)))
    per = 1e6 / args.records
    print(f"records per run        {args.records} in batches of {args.batch}")
    print(f"loop without metrics   {min(bare) * per:.2f} us/record (CPU, best of {args.repeat})")
    print(f"loop with metrics      {min(metered) * per:.2f} us/record")
    print(f"metrics add            {(min(metered) - min(bare)) * per:.2f} us/record")


if __name__ == "__main__":
    main()
