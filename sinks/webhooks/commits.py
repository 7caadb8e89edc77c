"""An endpoint's commits: its positions and done offsets, in requests the broker takes.

Kafka writes one offset commit request as one record batch to `__consumer_offsets`
and refuses it whole past the broker's `message.max.bytes` (1 MiB by default):
`InvalidCommitOffsetSizeError` (error 28) from the classic group coordinator,
`UnknownError` (error -1) from Kafka 4's (seen on 4.1.2). With the done offsets
of done.py, up to 3,000 bytes per partition, one request for some 350 partitions
is past that: sent whole, it failed at every commit, no position was ever
committed, and every restart posted again everything since.

So a commit goes out in chunks of at most `request_bytes` (estimated: each
partition's metadata plus `ENTRY_BYTES`; `COMMIT_REQUEST_BYTES` at first), each
its own request. A chunk refused with metadata (error 28 or `UnknownError`) is
sent again at once without it, so its positions pass (the deliveries finished
above them are posted again after a stop or a crash, as before done.py; the
metadata is offered again at the next commit). Only when that passes, and the
error says size (error 28, or `UnknownError` on a chunk of at least
`UNKNOWN_TOO_LARGE_BYTES`: Kafka 4 answers it for any unexpected exception of
the broker), is the chunk taken as too large: the next chunks are cut at half
its size (each chunk is cut when it is sent, so one commit goes down in a few
steps, not one halving per chunk cut before), or, a chunk of one partition,
that partition's commits carry no metadata from now on. After `REGROW_S`
without such a refusal, the requests grow back.

A commit takes partitions and values as they are when each chunk is sent: still
assigned, as the tracker offers them now (a partition revoked meanwhile is left
out, also from a chunk aiokafka refused for it, and a value moved on is sent as
it is now). Commits run one at a time (a lock): the rebalance listener's
commit, on aiokafka's coordinator task, waits for the periodic one, so no chunk
built from older values reaches the broker after a newer commit of the same
partition (aiokafka sends commit requests one by one,
and the listener forgets the partitions after its commit, so nothing would
correct it: their next owner would post again what was finished in between).

Only what Kafka took is marked committed (`OffsetTracker.committed`). A chunk
that fails otherwise (the coordinator gone, a timeout) ends the commit, logged
`commit_failed`: it and the chunks after it are offered again at the next one.
A whole commit, waiting for the lock included, has one `COMMIT_TIMEOUT_S`: a
broker gone or slow costs that, not one per chunk, and the notifier's stop
deadline (notify_runner.py) budgets one for its final commit.

The broker's refusals of our metadata (`message.max.bytes`, an `UnknownError` not
taken for it, and `offset.metadata.max.bytes` below done.py's bound) are logged
once per endpoint and cause, as `webhook_done_offsets_refused` (`limit`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    IllegalStateError,
    InvalidCommitOffsetSizeError,
    KafkaError,
    OffsetMetadataTooLargeError,
    UnknownError,
)

from sinks import consumer as sink_consumer
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
UNKNOWN_TOO_LARGE_BYTES = 64 * 1024
"""An `UnknownError` is taken for "too large" only on a chunk this large (estimated): Kafka 4
answers it for any unexpected broker exception, and aiokafka maps every code it does not
know to it (a fault must not shrink the requests). A Kafka 4 broker whose
`message.max.bytes` is lower keeps refusing chunks this size: each is then committed without
its metadata, at every commit."""
REGROW_S = 600.0
"""After this long without a chunk refused as too large, the requests grow back (doubled at
each commit, up to `COMMIT_REQUEST_BYTES`): a limit since raised, or a fault taken for one,
does not keep them small until a restart; a limit still there costs one refused chunk
(committed without its metadata, which the next commit carries) per this interval."""


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
        """The chunk size: half a chunk refused as too large, grown back after `REGROW_S`."""
        self._shrunk_at = -REGROW_S
        self._lock = asyncio.Lock()
        """One commit at a time (the module's docstring says why)."""
        self._refused: set[str] = set()

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit each assigned partition's position and, as its metadata, the offsets
        finished above it (done.py), when either changed."""
        try:
            async with asyncio.timeout(sink_consumer.COMMIT_TIMEOUT_S), self._lock:
                await self._commit(consumer)
        except (KafkaError, TimeoutError) as exc:
            log.warning("commit_failed", endpoint=self.endpoint, error=type(exc).__name__)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        left = set(self.tracker.committable())
        for tp in left:
            self.left_out.note(tp, self.tracker.left_out(tp))
        while chunk := self._next_chunk(consumer, left):
            try:
                await self._commit_chunk(consumer, chunk)
            except OffsetMetadataTooLargeError:
                if self.tracker.metadata_limit == 0:
                    raise
                # a broker whose `offset.metadata.max.bytes` is below ours: without
                # this, no commit would ever pass and every restart re-post it all
                self._refused_once(
                    "offset.metadata.max.bytes",
                    "commits carry no done offsets from now on: deliveries finished "
                    "above the committed position are delivered again after a stop or "
                    "a crash; raise the broker's offset.metadata.max.bytes to "
                    f"{MAX_METADATA_BYTES} or more",
                )
                self.tracker.refuse_metadata()  # the chunk goes again, without
                continue
            except IllegalStateError:
                if chunk.keys() <= consumer.assignment():
                    raise
                continue  # a partition revoked meanwhile (aiokafka refuses the chunk):
                # the chunk's others go again, without it
            left.difference_update(chunk)
        if time.monotonic() - self._shrunk_at >= REGROW_S:
            self.request_bytes = min(2 * self.request_bytes, COMMIT_REQUEST_BYTES)

    def _next_chunk(
        self, consumer: AIOKafkaConsumer, left: set[TopicPartition]
    ) -> dict[TopicPartition, Commit]:
        """The next chunk of `left`, of the partitions still assigned and their values now."""
        assigned = consumer.assignment()
        offsets = {
            tp: commit
            for tp, commit in self.tracker.committable().items()
            if tp in left and tp in assigned
        }
        left.intersection_update(offsets)
        return chunked(offsets, self.request_bytes)[0] if offsets else {}

    async def _commit_chunk(
        self, consumer: AIOKafkaConsumer, chunk: dict[TopicPartition, Commit]
    ) -> None:
        """Commit `chunk`, or its positions without the metadata if refused with it."""
        try:
            await commit_within(consumer, chunk)
        except TOO_LARGE as exc:
            if not any(commit.metadata for commit in chunk.values()):
                raise
            bare = {tp: Commit(commit.offset, "") for tp, commit in chunk.items()}
            await commit_within(consumer, bare)  # the positions, at once
            self.tracker.committed(bare)  # the metadata is offered at the next commit
            self._too_large(exc, chunk)
        else:
            self.tracker.committed(chunk)

    def _too_large(self, exc: KafkaError, chunk: Mapping[TopicPartition, Commit]) -> None:
        """`chunk` was refused with its metadata and taken without: if the error says it
        was too large, shrink the requests (or drop its one partition's metadata)."""
        size = sum(entry_bytes(commit) for commit in chunk.values())
        if isinstance(exc, UnknownError) and size < UNKNOWN_TOO_LARGE_BYTES:
            self._refused_once(
                type(exc).__name__,
                f"a commit request of {size} bytes with done offsets was refused "
                f"({type(exc).__name__}, too small to be taken for message.max.bytes) and "
                "taken without them: deliveries finished above those positions are "
                "delivered again after a stop or a crash until a later commit carries them",
            )
            return
        self._refused_once(
            "message.max.bytes",
            "a commit request was too large for the broker: its partitions' positions "
            "are committed without done offsets (deliveries finished above them are "
            "delivered again after a stop or a crash), and commits are sent in "
            "smaller requests; raise the broker's message.max.bytes to "
            f"{COMMIT_REQUEST_BYTES} or more",
        )
        self._shrunk_at = time.monotonic()
        if len(chunk) == 1:  # its metadata alone is too large: its commits carry none
            self.tracker.refuse_metadata(chunk)
        else:
            self.request_bytes = max(min(self.request_bytes, size // 2), 1)

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
