"""A bare faust-streaming agent for bench/engine.py: the yardstick of faust's own speed.

One agent over the four input topics, the engine's app settings
(`streams.app.create_app`) and garbage-collector settings, per record one
table write and one output send, values left as bytes. With `--idle` the agent
takes its records in batches as the engine's agents do (`take_events`, up to
2,000 within `--within` s) and does nothing with them: what faust's consume
path alone delivers, the ceiling of any engine built on faust's agents. It exits after
`--records` records (and a commit) and prints
`{"first_s": ..., "done_s": ...}` (seconds from process start to the first
record and to the commit after the last one).

    python bench/bare_faust.py --app-id ID --bootstrap HOST:PORT --prefix P. \\
        --partitions 4 --records N --data-dir DIR
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust

from chainwatch.collector import settle_collector
from chainwatch.kafka_admin import ensure_named_topics
from chainwatch.logs import configure_logging
from chainwatch.settings import Settings
from streams.app import create_app
from streams.topics import INPUT_TOPICS, TopicNames

STARTED = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--commit-interval", type=float, default=0.2)
    parser.add_argument("--idle", action="store_true", help="batches, nothing done per record")
    parser.add_argument("--within", type=float, default=0.2, help="--idle: batch window (s)")
    args = parser.parse_args()
    app = create_app(
        args.app_id,
        bootstrap=args.bootstrap,
        partitions=args.partitions,
        data_dir=args.data_dir,
        broker_commit_interval=args.commit_interval,
    )
    names = TopicNames(args.prefix)
    source = app.topic(
        *(names(t) for t in INPUT_TOPICS), key_serializer="raw", value_serializer="raw"
    )
    # faust declares the topics it reads, not one it only sends to, and the broker
    # creates none (auto.create.topics.enable=false)
    ensure_named_topics(
        args.bootstrap, [f"{args.app_id}-out"], request_timeout_s=15, partitions=args.partitions
    )
    out = app.topic(
        f"{args.app_id}-out",
        key_serializer="raw",
        value_serializer="raw",
        internal=True,
        partitions=args.partitions,
    )
    table = app.Table("bare", key_type=bytes, value_type=bytes)
    seen = 0
    first: float | None = None

    async def done() -> None:
        await app.consumer.commit()
        print(f'{{"first_s": {first}, "done_s": {time.monotonic() - STARTED}}}')
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGTERM)

    async def bare(stream: Any) -> AsyncIterator[None]:
        nonlocal seen, first
        async for event in stream.events():
            if first is None:
                first = time.monotonic() - STARTED
            key = event.key or b"-"
            table[key] = event.value or b""
            await out.send(key=key, value=event.value)
            seen += 1
            if seen == args.records:
                await done()
            yield None

    async def idle(stream: Any) -> AsyncIterator[None]:
        nonlocal seen, first
        async for events in stream.take_events(2000, args.within):
            if first is None:
                first = time.monotonic() - STARTED
            seen += len(events)
            if seen - len(events) < args.records <= seen:  # once: the batch reaching it
                await done()
            yield None

    app.agent(source, name="bare", concurrency=1)(idle if args.idle else bare)

    # the worker's logging (chainwatch.runners): faust's own would set the root logger to
    # DEBUG for its spinner, and every debug call of faust and aiokafka would build a record
    configure_logging("warning")
    # and the worker's garbage collector (chainwatch.runners): a yardstick without it
    # would pay the collector's passes the engine no longer pays
    settle_collector(Settings().engine.gc_young_threshold)
    faust.Worker(
        app, loglevel="warning", quiet=True, override_logging=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
