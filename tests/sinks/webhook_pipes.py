"""An endpoint's pipeline without Kafka or HTTP, fed records by hand
(tests/sinks/test_webhook_invalid.py, test_webhook_repeats.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from sink_samples import record

from sinks.webhooks.delivery import RetryPolicy
from sinks.webhooks.dispatcher import EndpointPipe, PipeConfig, Topics
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import TargetPolicy, parse_networks


def offline_pipe(name: str, filters: dict[str, Any] | None = None) -> EndpointPipe:
    """A Slack endpoint's pipeline on topics `cw.*`; nothing it does reaches Kafka."""
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
    )
    return EndpointPipe(endpoint, config, producer=None)  # type: ignore[arg-type]  # no I/O here


def hand_records(
    pipe: EndpointPipe, tp: TopicPartition, values: Iterable[bytes | None], first: int
) -> None:
    """`values` as the records of `tp` from offset `first` on, as the consumer hands them."""
    records: list[ConsumerRecord[bytes, bytes]] = [
        record(v, topic=tp.topic, partition=tp.partition, offset=first + i)
        for i, v in enumerate(values)
    ]
    asyncio.run(pipe.handle(tp, records))
