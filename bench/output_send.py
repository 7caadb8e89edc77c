"""CPU per output message: faust's `Topic.send` against the engine's direct path.

Both go to the same `AIOKafkaProducer` of one app (`streams.app.create_app`) and the
same topic: `Topic.send` through faust's per-message path (`FutureMessage`,
serialisers, sensors, a callback), `send_tracked` straight to aiokafka's
accumulator (what `OutputSender` sends ticks with), and `send_batch_tracked` (what
`OutputSender` sends a step's outputs with: one record batch per partition, one
delivery future per batch). Per message: process CPU time of the sends
alone, of the sends plus the flush that waits for the broker's acknowledgements,
and wall time; best of `--rounds`, alternating the two paths.

    CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:29092 .venv/bin/python bench/output_send.py

Not a test: it prints numbers. It creates one topic and deletes it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kafka.admin import NewTopic

from chainwatch.kafka_admin import admin_client, close_admin
from chainwatch.settings import Settings
from streams.app import create_app


async def measure(bootstrap: str, messages: int, size: int, rounds: int) -> dict[str, list[Any]]:
    name = f"bench-output-send-{uuid.uuid4().hex[:8]}"
    admin = admin_client(bootstrap, request_timeout_s=15)
    admin.create_topics([NewTopic(name, 4, 1)], timeout_ms=10_000)
    results: dict[str, list[Any]] = {
        "faust Topic.send": [],
        "send_tracked": [],
        "send_batch_tracked": [],
    }
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            app = create_app(name, bootstrap=bootstrap, partitions=4, data_dir=Path(data_dir))
            producer: Any = app.producer
            await producer.start()
            try:
                topic = app.topic(name, key_serializer="raw", value_serializer="raw")
                keys, value = [b"PO-%d" % i for i in range(messages)], b"x" * size
                await producer.send_tracked(name, b"warm-up", value, None)
                await producer.flush()
                for _ in range(rounds):
                    for label, rows in results.items():
                        cpu, wall = time.process_time(), time.perf_counter()
                        if label == "send_tracked":
                            for key in keys:
                                await producer.send_tracked(name, key, value, None)
                        elif label == "send_batch_tracked":
                            partition_of = await producer.key_partitioner(name)
                            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
                            for key in keys:
                                producer.check_size(key, value)
                                by_partition.setdefault(partition_of(key), []).append((key, value))
                            for partition, records in by_partition.items():
                                await producer.send_batch_tracked(name, partition, records)
                        else:
                            for key in keys:
                                await topic.send(key=key, value=value)
                        sent = time.process_time()
                        await producer.flush()
                        done, end = time.process_time(), time.perf_counter()
                        rows.append((sent - cpu, done - cpu, end - wall))
            finally:
                await producer.stop()
    finally:
        admin.delete_topics([name], timeout_ms=10_000)
        close_admin(admin)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=600, help="value bytes (a snapshot: ~0.5-2 KB)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bootstrap = Settings().kafka.bootstrap
    results = asyncio.run(measure(bootstrap, args.messages, args.size, args.rounds))
    n = args.messages
    print(f"{n} messages of {args.size} B, per message in µs, best of {args.rounds}")
    print(f"{'path':18} {'sends CPU':>10} {'+ flush CPU':>12} {'wall':>8}")
    for label, rows in results.items():
        sends, flushed, wall = (1e6 * x / n for x in min(rows, key=lambda row: row[1]))
        print(f"{label:18} {sends:10.1f} {flushed:12.1f} {wall:8.1f}")


if __name__ == "__main__":
    main()
