"""A producer holding a record for a partition without a leader, no broker reachable,
waits its retry backoff between metadata attempts (chainwatch.kafka_metadata_backoff).

Seen on the notifier during a broker outage (`chainwatch kafka stop`, its delivery log's
record pending): aiokafka's sender asked for metadata again the moment the last attempt
failed, and a refused connection fails in microseconds: 87 % of a core, 130,000
attempts every 30 s, for as long as the broker was down. Here a real producer, started
on the suite's broker, is left with what that outage leaves it: its broker at an address
nobody listens on (a port bound and not listening: a connect is refused at once) and the
partition's leader unknown.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import BrokerMetadata, PartitionMetadata

BACKOFF_MS = 200
ATTEMPTS = 6
WAIT_S = 30.0
STOP_MS = 5_000


def test_a_producer_without_a_leader_or_a_broker_backs_off_between_metadata_attempts(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []
    update = AIOKafkaClient._metadata_update

    async def run() -> None:
        enough = asyncio.Event()

        async def counted(self: AIOKafkaClient, cluster: object, topics: object) -> bool:
            attempts.append(time.monotonic())
            if len(attempts) >= ATTEMPTS:
                enough.set()
            return bool(await update(self, cluster, topics))

        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            retry_backoff_ms=BACKOFF_MS,
            request_timeout_ms=STOP_MS,  # the stop waits for the pending record to expire
        )
        await producer.start()
        try:
            with socket.socket() as gone:  # bound, never listening: a connect is refused
                gone.bind(("127.0.0.1", 0))
                port = gone.getsockname()[1]
                client = producer.client
                cluster = client.cluster
                for conn in list(client._conns.values()):
                    conn.close()
                client._conns.clear()
                node = next(iter(cluster._brokers))
                cluster._brokers = {node: BrokerMetadata(node, "127.0.0.1", port, None)}
                cluster._partitions["cw-leaderless"] = {
                    0: PartitionMetadata("cw-leaderless", 0, -1, [], [], None)
                }
                monkeypatch.setattr(AIOKafkaClient, "_metadata_update", counted)
                pending = await producer.send("cw-leaderless", b"x", partition=0)
                async with asyncio.timeout(WAIT_S):
                    await enough.wait()
                pending.cancel()
        finally:
            await producer.stop()

    asyncio.run(run())
    took = attempts[ATTEMPTS - 1] - attempts[0]
    # each failed attempt ends a backoff later; without it they came microseconds apart
    assert took >= (ATTEMPTS - 1) * BACKOFF_MS / 1000 * 0.9, (len(attempts), took)
