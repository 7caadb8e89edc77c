"""`chainwatch gateway`, the process the units post to, on a Kafka that wants SASL.

tests/foundation/test_kafka_sasl.py runs every other client on such a cluster, and the
gateway's publisher in-process; this runs the gateway as deployed: its topic set-up in
the background, its readiness probe and its transactional producers, all given the
settings through its environment. A post it answers 202 is in Kafka, read back there
by a client with the same credentials; the password is in none of its log lines.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from aiokafka import TopicPartition
from gateway_harness import running_gateway_process, token_of
from samples import fresh_scan
from secured_kafka import PASSWORD, USER, SecuredListeners

from schemas.kafka_security import KafkaEndpoint
from schemas.topics import SCANS
from sinks.consumer import new_consumer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def sasl_broker(secured_kafka: SecuredListeners) -> str:
    """The session's secured broker's SASL_PLAINTEXT listener (conftest.py)."""
    return secured_kafka.sasl_plaintext


def test_the_gateway_process_takes_posts_into_a_sasl_cluster(
    sasl_broker: str, tmp_path: Path
) -> None:
    security = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": USER,
        "sasl_password": PASSWORD,
    }
    scan = fresh_scan()
    with running_gateway_process(sasl_broker, tmp_path, kafka=security) as gateway:
        answer = httpx.post(
            f"{gateway.base_url}/v1/scans",
            content=json.dumps(scan).encode(),
            headers={
                "Authorization": f"Bearer {token_of('admin')}",
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        kafka = gateway.settings.kafka
        read = asyncio.run(_values(kafka.endpoint, kafka.topic(SCANS), kafka.partitions))
    assert [json.loads(value)["event_id"] for value in read] == [scan["event_id"]]
    assert PASSWORD not in (tmp_path / "gateway.log").read_text()


async def _values(endpoint: KafkaEndpoint, topic: str, partitions: int) -> list[bytes]:
    """Every value on `topic` (read committed, to its end), read with the credentials."""
    consumer = new_consumer(endpoint, None, isolation_level="read_committed")
    async with asyncio.timeout(30):
        await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(30):
            ends = await consumer.end_offsets(tps)
            values: list[bytes] = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values += [r.value for r in records if r.value is not None]
        return values
    finally:
        await consumer.stop()
