"""An endpoint's pipeline without Kafka or HTTP, fed records by hand
(tests/sinks/test_webhook_invalid.py, test_webhook_repeats.py, test_webhook_rebalance.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from sink_samples import record

from sinks.webhooks.delivery import RetryPolicy
from sinks.webhooks.dispatcher import EndpointPipe, PipeConfig, Topics
from sinks.webhooks.silence_follower import SilenceFollower
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import TargetPolicy, parse_networks


def offline_pipe(
    name: str,
    filters: dict[str, Any] | None = None,
    *,
    silences: SilenceFollower | None = None,
    producer: LogProducer | None = None,
) -> EndpointPipe:
    """A Slack endpoint's pipeline on topics `cw.*`; nothing it does reaches Kafka
    (`silences`: a follower never started, its book filled by hand)."""
    endpoint = Endpoint.model_validate(
        {
            "name": name,
            "url": "https://hooks.example.com/x",
            "format": "slack",
            "filters": filters or {},
        }
    )
    config = PipeConfig(
        bootstrap="unused:9092",
        group_id="cw-notify",
        topics=Topics("cw.alerts", "cw.webhook-deliveries", "cw.webhook-dead-letter"),
        policy=RetryPolicy(),
        targets=TargetPolicy(parse_networks("")),
        queue_size=100,
        consumer_options={},
        silences=silences,
    )
    return EndpointPipe(endpoint, config, producer=producer)  # type: ignore[arg-type]  # no I/O


def records_of(
    tp: TopicPartition, values: Iterable[bytes | None], first: int
) -> list[ConsumerRecord[bytes, bytes]]:
    """`values` as the records of `tp` from offset `first` on."""
    return [
        record(v, topic=tp.topic, partition=tp.partition, offset=first + i)
        for i, v in enumerate(values)
    ]


def hand_records(
    pipe: EndpointPipe, tp: TopicPartition, values: Iterable[bytes | None], first: int
) -> None:
    """`values` as the records of `tp` from offset `first` on, as the consumer hands them."""
    asyncio.run(pipe.handle(tp, records_of(tp, values, first)))


class LogProducer:
    """Takes the delivery log and dead letters a finished delivery publishes."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.values: list[bytes] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append(topic)
        self.values.append(value)


class FakeCoordinator:
    """The group's last commits, with their metadata (done.py reads them at assignment)."""

    def __init__(self) -> None:
        self.committed: dict[TopicPartition, OffsetAndMetadata] = {}

    async def fetch_committed_offsets(
        self, tps: Collection[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return {tp: self.committed[tp] for tp in tps if tp in self.committed}


class FakeConsumer:
    """The endpoint consumer's pause state, positions and commits: all the warm-up and
    the rebalance listener use."""

    def __init__(self, tps: Collection[TopicPartition]) -> None:
        self._assigned = set(tps)
        self._paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, Any]] = []
        self._coordinator = FakeCoordinator()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def position(self, tp: TopicPartition) -> int:
        return 10

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(dict(offsets))
