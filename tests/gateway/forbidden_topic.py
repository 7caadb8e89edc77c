"""A gateway publisher whose principal may not write one topic, as an ACL missing on it
makes it (tests/gateway/test_gateway_topic_not_authorized.py, test_group_commit.py)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

from streams.ingest.publisher import PublisherConfig, TransactionalPublisher
from streams.ingest.records import OutRecord, Placement


class ForbiddenTopic(TransactionalPublisher):
    """The gateway's principal may not write `forbidden`: sending to it fails as aiokafka's
    metadata wait fails it (an ACL missing on one topic); every other topic publishes."""

    def __init__(self, config: PublisherConfig, forbidden: str) -> None:
        super().__init__(config)
        self.forbidden = forbidden

    async def _send_batched(
        self, producer: AIOKafkaProducer, records: Sequence[OutRecord]
    ) -> list[Placement]:
        if any(r.topic == self.forbidden for r in records):
            raise TopicAuthorizationFailedError(self.forbidden)
        return await super()._send_batched(producer, records)
