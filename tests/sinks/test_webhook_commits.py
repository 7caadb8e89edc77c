"""An endpoint's commit goes out in requests the broker takes (sinks/webhooks/commits.py).

With done offsets (done.py) of up to 3,000 bytes per partition, one commit request
for ~350 partitions was past the broker's `message.max.bytes` (1 MiB): refused
every time (`InvalidCommitOffsetSizeError`, Kafka 4: `UnknownError`), no position
was ever committed, and every restart posted everything since again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import InvalidCommitOffsetSizeError, RequestTimedOutError
from structlog.testing import capture_logs
from webhook_pipes import FakeConsumer, offline_pipe

from sinks.webhooks.commits import COMMIT_REQUEST_BYTES, entry_bytes
from sinks.webhooks.dispatcher import EndpointPipe
from sinks.webhooks.done import MAX_METADATA_BYTES, decode
from sinks.webhooks.offsets import Commit, OffsetTracker

TOPIC = "cw.alerts"
DONE = [(2 * k, 2 * k + 1) for k in range(1, 1_496)]
"""Every other record above the position finished: done offsets of 2,995 bytes."""


def _held(tracker: OffsetTracker, tps: list[TopicPartition]) -> dict[TopicPartition, Commit]:
    """Each partition held at 0 (pending) with `DONE` above it; what they commit."""
    for tp in tps:
        tracker.restore(tp, DONE)
        tracker.consumed(tp, 0, 1)
    offsets = tracker.committable()
    assert all(len(c.metadata) > MAX_METADATA_BYTES - 10 for c in offsets.values())
    return offsets


class SizedBroker(FakeConsumer):
    """Refuses a commit request past `max_bytes` whole, as a broker over its
    `message.max.bytes` does; `fail_at`: the request numbers (from 1) that time out."""

    def __init__(
        self, tps: list[TopicPartition], max_bytes: int, fail_at: tuple[int, ...] = ()
    ) -> None:
        super().__init__(tps)
        self.max_bytes = max_bytes
        self.fail_at = fail_at
        self.requests: list[int] = []  # each request's size

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        size = sum(len(metadata) + 100 for _offset, metadata in offsets.values())
        self.requests.append(size)
        if len(self.requests) in self.fail_at:
            raise RequestTimedOutError
        if size > self.max_bytes:
            raise InvalidCommitOffsetSizeError
        await super().commit(offsets)

    def taken(self) -> dict[TopicPartition, Any]:
        """What the group holds now: the last commit taken of each partition."""
        return {tp: c for commit in self.commits for tp, c in commit.items()}


def test_a_commit_too_large_for_one_request_is_committed_in_chunks_with_its_metadata() -> None:
    pipe = offline_pipe("commit-chunks")
    tps = [TopicPartition(TOPIC, p) for p in range(400)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=1_048_588)  # the broker's default

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
    assert broker.taken() == offsets  # every position, each with its done offsets
    assert len(broker.requests) > 1
    assert max(broker.requests) <= COMMIT_REQUEST_BYTES < broker.max_bytes
    assert pipe.tracker.committable() == {}  # taken: not offered again
    assert [e["event"] for e in logged if e["log_level"] == "warning"] == []


def test_a_chunk_refused_all_the_same_is_committed_without_metadata_and_logged_once() -> None:
    """A broker whose `message.max.bytes` is lower than our requests: the positions pass
    at once, and the requests shrink until the done offsets fit again."""
    pipe = offline_pipe("commit-refused")
    tps = [TopicPartition(TOPIC, p) for p in range(20)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=4 * entry_bytes(offsets[tps[0]]))

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
        assert broker.taken() == {tp: (0, "") for tp in tps}  # the positions, at once
        assert pipe.tracker.committable() == offsets  # exact: the metadata was not taken
        for _ in range(10):  # later commits, every COMMIT_INTERVAL_S
            asyncio.run(pipe.commit(broker))
    assert broker.taken() == offsets  # in requests small enough, the metadata is kept
    assert pipe.tracker.committable() == {}
    refused = [e for e in logged if e["event"] == "webhook_done_offsets_refused"]
    assert [(e["endpoint"], e["limit"]) for e in refused] == [
        ("commit-refused", "message.max.bytes")
    ]  # once, not per chunk nor per commit


def test_only_the_chunks_kafka_took_are_marked_committed() -> None:
    pipe = offline_pipe("commit-partial")
    tps = [TopicPartition(TOPIC, p) for p in range(200)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=1_048_588, fail_at=(2,))

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
    first = broker.taken()
    assert first
    assert len(broker.requests) == 2  # a failed chunk ends the commit: no third
    assert pipe.tracker.committable() == {tp: c for tp, c in offsets.items() if tp not in first}
    failed = [e for e in logged if e["event"] == "commit_failed"]
    assert [e["error"] for e in failed] == ["RequestTimedOutError"]

    asyncio.run(pipe.commit(broker))  # the rest, at the next commit
    assert broker.taken() == offsets
    assert pipe.tracker.committable() == {}


@pytest.mark.slow
def test_a_commit_past_the_real_brokers_message_max_bytes_passes_with_its_metadata(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    """360 partitions with full done offsets: some 1.1 MB in one request, past the
    broker's default `message.max.bytes` (Kafka 4 answers `UnknownError`)."""
    topic = unique("commit-chunks")
    tps = [TopicPartition(topic, p) for p in range(360)]
    chunked, whole = offline_pipe("commit-real"), offline_pipe("commit-real-whole")
    offsets = _held(chunked.tracker, tps)
    _held(whole.tracker, tps)
    whole.committer.request_bytes = 2 * 1024 * 1024  # as if our estimate were wrong

    async def commits(pipe: EndpointPipe, group: str, times: int) -> list[dict[str, Any]]:
        """The group's committed offsets after each of `times` commits."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            out = []
            for _ in range(times):
                await pipe.commit(consumer)
                read = consumer._coordinator.fetch_committed_offsets(tps)
                committed = await asyncio.wait_for(read, 10)
                out.append({tp: (c.offset, c.metadata) for tp, c in committed.items()})
            return out
        finally:
            await consumer.stop()

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, len(tps), 1)])
            return (
                await commits(chunked, unique("commit-chunked"), 1),
                await commits(whole, unique("commit-whole"), 2),
            )
        finally:
            await admin.delete_topics([topic])  # 360 partition directories fewer
            await admin.close()

    with capture_logs() as logged:
        [in_chunks], [plain, kept] = asyncio.run(run())
    assert in_chunks == offsets  # in chunks: each position with its done offsets
    assert all(decode(0, metadata) == DONE for _offset, metadata in in_chunks.values())
    # sent whole, refused: the positions at once, then in smaller requests with metadata
    assert plain == {tp: (0, "") for tp in tps}
    assert kept == offsets
    warned = [(e["endpoint"], e["event"]) for e in logged if e["log_level"] == "warning"]
    assert warned == [("commit-real-whole", "webhook_done_offsets_refused")]
