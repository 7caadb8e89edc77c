"""Many records published fast, for the tests whose point is not how they are published.

kafka-python's producer builds every record in Python: 20,000 scans took 3.2 s on a
quiet 2-core VM (and several times that beside CPU hogs, the test process traced by
coverage). aiokafka's producer builds its batches in C: 0.7 s for the same records.

What is kept of kafka-python's way: every record is acknowledged by all in-sync
replicas (acks="all") before `publish_records` returns; the records of one partition
are in the log in the order given (one producer, each send queued before the next);
a key goes to the partition Kafka's Java client and kafka-python choose (murmur2 of the
key), so tests that publish a key again find it where it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from aiokafka import AIOKafkaProducer

Record = tuple[str, bytes | None, bytes | None]
"""(topic, key, value)"""


def publish_records(bootstrap: str, records: Iterable[Record]) -> int:
    """Publish `records` in order, all acknowledged on return; how many there were.

    Called from a coroutine, it blocks that loop until done, as kafka-python's producer
    did: its own loop runs on a thread of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_publish(bootstrap, records))
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, _publish(bootstrap, records)).result()


async def _publish(bootstrap: str, records: Iterable[Record]) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 << 10
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, key=key, value=value) for topic, key, value in records]
        await asyncio.gather(*sent)
        return len(sent)
    finally:
        await producer.stop()
