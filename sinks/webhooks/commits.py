"""An endpoint's commits: its positions and done offsets, in requests the broker takes.

Kafka writes one offset commit request as one record batch to `__consumer_offsets`
and refuses it whole past the broker's `message.max.bytes` (1 MiB by default):
`InvalidCommitOffsetSizeError` (error 28) from the classic group coordinator,
`UnknownError` (error -1) from Kafka 4's (seen on 4.1.2). With the done offsets
of done.py, up to 3,000 bytes per partition, one request for some 350 partitions
is past that: sent whole, it failed at every commit, no position was ever
committed, and every restart posted again everything since.

So a commit goes out in chunks of at most `COMMIT_REQUEST_BYTES` (estimated:
each partition's metadata plus `ENTRY_BYTES`), each its own bounded commit
(`commit_within`). A chunk refused as too large all the same (a broker whose
`message.max.bytes` is lower still) is committed at once without its metadata,
so its positions pass (the deliveries finished above them are posted again after
a stop or a crash, as before done.py), and the next commits are sent in
smaller requests (halved, down to one partition each), which can keep it.

Only what Kafka took is marked committed (`OffsetTracker.committed`). A chunk
that fails otherwise (the coordinator gone, a timeout) ends the commit, logged
`commit_failed`: it and the chunks after it are offered again at the next one,
and a broker gone costs one `COMMIT_TIMEOUT_S`, not one per chunk.

The broker's refusals of our metadata (this one, and `offset.metadata.max.bytes`
below done.py's bound) are logged once per endpoint and cause, as
`webhook_done_offsets_refused`.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    InvalidCommitOffsetSizeError,
    KafkaError,
    OffsetMetadataTooLargeError,
    UnknownError,
)

from sinks.consumer import commit_within
from sinks.webhooks.done import MAX_METADATA_BYTES, LeftOutLog
from sinks.webhooks.offsets import Commit, OffsetTracker

log = structlog.stdlib.get_logger(__name__)

COMMIT_REQUEST_BYTES = 256 * 1024
"""How large one commit request may be (estimated): a quarter of the broker's default
`message.max.bytes` (1 MiB), so some 64 partitions with full done offsets each."""
ENTRY_BYTES = 1_024
"""What one partition's offset record takes besides its metadata (the key's group id and
topic, the offset, timestamps and framing): a bound, for a topic name of at most 249
characters and a group id of a few hundred."""
TOO_LARGE = (InvalidCommitOffsetSizeError, UnknownError)
"""How a broker refuses a commit request over its `message.max.bytes`: the classic group
coordinator's error 28, Kafka 4's `UNKNOWN_SERVER_ERROR` (an `UnknownError` on a chunk
without metadata, or on the same chunk without it, is a failure like any other)."""


def entry_bytes(commit: Commit) -> int:
    """The estimated size of one partition's commit in the request's record batch."""
    return len(commit.metadata.encode()) + ENTRY_BYTES


def chunked(
    offsets: Mapping[TopicPartition, Commit], limit: int = COMMIT_REQUEST_BYTES
) -> list[dict[TopicPartition, Commit]]:
    """`offsets` in requests of at most `limit` estimated bytes (one partition at least),
    in partition order."""
    chunks: list[dict[TopicPartition, Commit]] = []
    size = 0
    for tp in sorted(offsets):
        cost = entry_bytes(offsets[tp])
        if not chunks or size + cost > limit:
            chunks.append({})
            size = 0
        chunks[-1][tp] = offsets[tp]
        size += cost
    return chunks


class Committer:
    """Commits one endpoint's offsets (`commit`), as its tracker offers them."""

    def __init__(self, endpoint: str, tracker: OffsetTracker, left_out: LeftOutLog) -> None:
        self.endpoint = endpoint
        self.tracker = tracker
        self.left_out = left_out
        self.request_bytes = COMMIT_REQUEST_BYTES
        """The chunk size: halved at each chunk refused as too large."""
        self._refused: set[str] = set()

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit each assigned partition's position and, as its metadata, the offsets
        finished above it (done.py), when either changed."""
        for _ in range(2):  # again at once without metadata if the broker refuses it
            assigned = consumer.assignment()
            offsets = {tp: off for tp, off in self.tracker.committable().items() if tp in assigned}
            if not offsets:
                return
            for tp in offsets:
                self.left_out.note(tp, self.tracker.left_out(tp))
            try:
                for chunk in chunked(offsets, self.request_bytes):
                    await self._commit_chunk(consumer, chunk)
                return
            except OffsetMetadataTooLargeError:
                # a broker whose `offset.metadata.max.bytes` is below ours: without
                # this, no commit would ever pass and every restart re-post it all
                self._refused_once(
                    "offset.metadata.max.bytes",
                    "commits carry no done offsets from now on: deliveries finished "
                    "above the committed position are delivered again after a stop or "
                    "a crash; raise the broker's offset.metadata.max.bytes to "
                    f"{MAX_METADATA_BYTES} or more",
                )
                self.tracker.refuse_metadata()
            except (KafkaError, TimeoutError) as exc:
                log.warning("commit_failed", endpoint=self.endpoint, error=type(exc).__name__)
                return

    async def _commit_chunk(
        self, consumer: AIOKafkaConsumer, chunk: dict[TopicPartition, Commit]
    ) -> None:
        try:
            await commit_within(consumer, chunk)
        except TOO_LARGE:
            if not any(commit.metadata for commit in chunk.values()):
                raise
            self._refused_once(
                "message.max.bytes",
                "a commit request was too large for the broker: its partitions' positions "
                "are committed without done offsets (deliveries finished above them are "
                "delivered again after a stop or a crash), and commits are sent in "
                "smaller requests; raise the broker's message.max.bytes to "
                f"{COMMIT_REQUEST_BYTES} or more",
            )
            self.request_bytes = max(self.request_bytes // 2, 1)
            chunk = {tp: Commit(commit.offset, "") for tp, commit in chunk.items()}
            await commit_within(consumer, chunk)
        self.tracker.committed(chunk)

    def _refused_once(self, limit: str, consequence: str) -> None:
        """Log, once per endpoint and broker limit, that the broker refused our metadata."""
        if limit in self._refused:
            return
        self._refused.add(limit)
        log.warning(
            "webhook_done_offsets_refused",
            endpoint=self.endpoint,
            limit=limit,
            consequence=consequence,
        )
