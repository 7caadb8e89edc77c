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
its own request, cut when it is sent. A chunk refused with metadata (error 28 or
`UnknownError`) is sent again at once without it, so its positions pass; if that
passes, the chunk was too large: the requests shrink to half its size and its
partitions go again, with their metadata, in this same commit (the listener's
commit and the final one at stop have no next commit). Each refusal at least
halves the requests; a lone partition refused keeps its metadata for a later
commit, or after error 28 for none (its metadata alone is too large). As Kafka 4
answers `UnknownError` also for a fault, one may be taken for size: that costs
smaller requests until `REGROW_S`, when they are reset, and never below
`UNKNOWN_FLOOR_BYTES`: a chunk that small refused with `UnknownError` is a fault
(its positions pass bare, its done offsets go at the next commit), or a broker
refusing every commit with metadata would be sent a request per partition.

A commit takes partitions and values as they are when each chunk is sent: still
assigned, as the tracker offers them now (a partition revoked meanwhile is left
out, also from a chunk aiokafka refused for it). Commits run one at a time (a
lock): aiokafka sends commit requests one by one, so a chunk of older values
sent after a newer commit would move the position back, and after the listener's
commit nothing corrects it (the next owner posts again what was finished). The
listener's commit (`revoking`) is the revoked partitions' last: the commit
holding the lock stops after its current chunk, and the listener's
`COMMIT_TIMEOUT_S` starts once it has the lock. Any other commit's timeout
includes its wait for the lock: the notifier's stop deadline (notify_runner.py)
budgets one for the final commit.

Only what Kafka took is marked committed (`OffsetTracker.committed`). A chunk
that fails otherwise (the coordinator gone, a timeout) ends the commit, logged
`commit_failed`: it and the chunks after it are offered again at the next one.
A whole commit has one `COMMIT_TIMEOUT_S`, and each request is awaited directly
under it (Python 3.11's `asyncio.wait_for` around one could swallow its
cancellation, and the commit ran on unbounded).

The broker's refusals of our metadata (`message.max.bytes`,
`offset.metadata.max.bytes`) are logged once per endpoint and cause, as
`webhook_done_offsets_refused` (`limit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    IllegalStateError,
    InvalidCommitOffsetSizeError,
    KafkaError,
    OffsetMetadataTooLargeError,
    UnknownError,
)

from schemas.deadline import deadline
from sinks import consumer as sink_consumer
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
coordinator's error 28, Kafka 4's `UNKNOWN_SERVER_ERROR` (which also answers any fault:
a chunk whose bare retry fails too is a failure like any other)."""
UNKNOWN_FLOOR_BYTES = 64 * 1024
"""The smallest chunk an `UnknownError` is taken as "too large" for: no broker's
`message.max.bytes` is that small by default, while Kafka 4 answers `UnknownError` for
any fault (and aiokafka for codes it does not know)."""
REGROW_S = 600.0
"""After this long without a chunk refused as too large, the requests are reset to
`COMMIT_REQUEST_BYTES`: a limit since raised, or a fault taken for one, does not keep them
small until a restart; a limit still there costs one refused chunk (and its bare retry)
per this interval."""


def entry_bytes(commit: Commit) -> int:
    """The estimated size of one partition's commit in the request's record batch."""
    return len(commit.metadata.encode()) + ENTRY_BYTES


def first_chunk(
    offsets: Mapping[TopicPartition, Commit], limit: int = COMMIT_REQUEST_BYTES
) -> dict[TopicPartition, Commit]:
    """The first request of `offsets`, in partition order: at most `limit` estimated
    bytes, one partition at least."""
    chunk: dict[TopicPartition, Commit] = {}
    size = 0
    for tp in sorted(offsets):
        size += entry_bytes(offsets[tp])
        if chunk and size > limit:
            break
        chunk[tp] = offsets[tp]
    return chunk


class Committer:
    """Commits one endpoint's offsets (`commit`), as its tracker offers them."""

    def __init__(self, endpoint: str, tracker: OffsetTracker, left_out: LeftOutLog) -> None:
        self.endpoint = endpoint
        self.tracker = tracker
        self.left_out = left_out
        self.request_bytes = COMMIT_REQUEST_BYTES
        """The chunk size: half a chunk refused as too large, reset after `REGROW_S`."""
        self._shrunk_at = -REGROW_S
        self._lock = asyncio.Lock()
        """One commit at a time (the module's docstring says why)."""
        self._revocations = 0
        """Listener commits waiting for the lock: the one holding it stops after its chunk."""
        self._refused: set[str] = set()

    async def commit(self, consumer: AIOKafkaConsumer, *, revoking: bool = False) -> None:
        """Commit each assigned partition's position and, as its metadata, the offsets
        finished above it (done.py), when either changed; `revoking`: the rebalance
        listener's commit, which the others make way for."""
        try:
            loop = asyncio.get_running_loop()
            # `schemas.deadline`, as around every aiokafka call: a cancel it swallowed
            # is raised again
            async with self._turn(revoking) as ends, deadline(ends - loop.time()):
                await self._commit(consumer, yields=not revoking)
        except (KafkaError, TimeoutError) as exc:
            log.warning("commit_failed", endpoint=self.endpoint, error=type(exc).__name__)

    @contextlib.asynccontextmanager
    async def _turn(self, revoking: bool) -> AsyncIterator[float]:
        """Hold the lock; yields the loop time the commit's `COMMIT_TIMEOUT_S` ends:
        counted from now, the wait for the lock included, or for the listener's commit
        from when it has the lock (the holder lets go after its current chunk)."""
        loop = asyncio.get_running_loop()
        if revoking:
            self._revocations += 1
            try:
                await self._lock.acquire()
            finally:
                self._revocations -= 1
            ends = loop.time() + sink_consumer.COMMIT_TIMEOUT_S
        else:
            ends = loop.time() + sink_consumer.COMMIT_TIMEOUT_S
            async with asyncio.timeout_at(ends):
                await self._lock.acquire()
        try:
            yield ends
        finally:
            self._lock.release()

    async def _commit(self, consumer: AIOKafkaConsumer, *, yields: bool) -> None:
        left = set(self.tracker.committable())
        for tp in left:
            self.left_out.note(tp, self.tracker.left_out(tp))
        while chunk := self._next_chunk(consumer, left):
            if yields and self._revocations:
                return  # the listener's commit takes over: the revoked partitions' last
            try:
                if await self._commit_chunk(consumer, chunk):
                    continue  # shrunk: its partitions go again now, in smaller chunks
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
            self.request_bytes = COMMIT_REQUEST_BYTES

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
        return first_chunk(offsets, self.request_bytes)

    async def _commit_chunk(
        self, consumer: AIOKafkaConsumer, chunk: dict[TopicPartition, Commit]
    ) -> bool:
        """Commit `chunk`, or if refused with its metadata, its positions without it;
        whether the requests shrank, so its metadata goes again in this commit."""
        try:
            await consumer.commit(dict(chunk))
        except TOO_LARGE as exc:
            if not any(commit.metadata for commit in chunk.values()):
                raise
            bare = {tp: Commit(commit.offset, "") for tp, commit in chunk.items()}
            await consumer.commit(bare)  # the positions, at once
            self.tracker.committed(bare)
            return self._too_large(exc, chunk)
        self.tracker.committed(chunk)
        return False

    def _too_large(self, exc: KafkaError, chunk: Mapping[TopicPartition, Commit]) -> bool:
        """`chunk` was refused with its metadata and taken without: shrink the requests,
        or, one partition, leave its metadata to a later commit (after error 28, to none:
        its metadata alone is too large); an `UnknownError` on a chunk of at most
        `UNKNOWN_FLOOR_BYTES` is a fault, its metadata left to the next commit. Whether
        the requests shrank."""
        size = sum(entry_bytes(commit) for commit in chunk.values())
        if isinstance(exc, UnknownError) and size <= UNKNOWN_FLOOR_BYTES:
            self._refused_once(
                "UnknownError",
                "a commit with done offsets was refused with UnknownError (a broker "
                "fault, or a message.max.bytes below 64 KiB): its positions are committed "
                "without them, and they go again at the next commit",
            )
            return False
        self._refused_once(
            "message.max.bytes",
            "a commit request was refused as too large for the broker: commits are sent "
            "in smaller requests, and a partition whose done offsets alone are refused "
            "commits without them (deliveries finished above its position are delivered "
            "again after a stop or a crash); raise the broker's message.max.bytes to "
            f"{COMMIT_REQUEST_BYTES} or more",
        )
        if len(chunk) > 1:
            self._shrunk_at = time.monotonic()
            self.request_bytes = max(min(self.request_bytes, size // 2), 1)
            return True
        if isinstance(exc, InvalidCommitOffsetSizeError):
            self.tracker.refuse_metadata(chunk)
        return False

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
