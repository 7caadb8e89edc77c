"""An endpoint's commit goes out in requests the broker takes (sinks/webhooks/commits.py).

With done offsets (done.py) of up to 3,000 bytes per partition, one commit request
for ~350 partitions was past the broker's `message.max.bytes` (1 MiB): refused
every time (`InvalidCommitOffsetSizeError`, Kafka 4: `UnknownError`), no position
was ever committed, and every restart posted everything since again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    IllegalStateError,
    InvalidCommitOffsetSizeError,
    KafkaError,
    OffsetMetadataTooLargeError,
    RequestTimedOutError,
    UnknownError,
)
from structlog.testing import capture_logs
from webhook_pipes import FakeConsumer, offline_pipe

from sinks import consumer as sink_consumer
from sinks.webhooks import commits
from sinks.webhooks.commits import COMMIT_REQUEST_BYTES, entry_bytes
from sinks.webhooks.dispatcher import EndpointPipe
from sinks.webhooks.done import MAX_METADATA_BYTES, decode
from sinks.webhooks.offsets import Commit, OffsetTracker
from sinks.webhooks.rebalance import RebalanceListener

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
    `message.max.bytes` does (with `too_large`: Kafka 4 answers `UnknownError`);
    `fail_at`: the request numbers (from 1) that fail with `failure`."""

    def __init__(
        self,
        tps: list[TopicPartition],
        max_bytes: int,
        fail_at: tuple[int, ...] = (),
        failure: type[KafkaError] = RequestTimedOutError,
        too_large: type[KafkaError] = InvalidCommitOffsetSizeError,
    ) -> None:
        super().__init__(tps)
        self.max_bytes = max_bytes
        self.fail_at = fail_at
        self.failure = failure
        self.too_large = too_large
        self.requests: list[int] = []  # each request's size

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        size = sum(len(metadata) + 100 for _offset, metadata in offsets.values())
        self.requests.append(size)
        if len(self.requests) in self.fail_at:
            raise self.failure
        if size > self.max_bytes:
            raise self.too_large
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
    at once, and the requests shrink until the done offsets fit, in the same commit."""
    pipe = offline_pipe("commit-refused")
    tps = [TopicPartition(TOPIC, p) for p in range(20)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=4 * entry_bytes(offsets[tps[0]]))

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
        assert broker.commits[0] == {tp: (0, "") for tp in tps}  # the positions, at once
        assert broker.taken() == offsets  # in requests small enough, the metadata is kept
        for _ in range(10):  # later commits, every COMMIT_INTERVAL_S
            asyncio.run(pipe.commit(broker))
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


def test_several_chunks_refused_in_one_commit_shrink_the_requests_once_to_a_size_that_fits() -> (
    None
):
    """Each chunk is cut at the size known when it is sent: one refusal halves the
    requests, not one per chunk cut before it (down to one partition per request)."""
    pipe = offline_pipe("commit-shrink")
    tps = [TopicPartition(TOPIC, p) for p in range(400)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=150_000)  # 2 chunks of 128 KiB would fit

    asyncio.run(pipe.commit(broker))
    assert broker.taken() == offsets  # every position, with its metadata, in this commit
    assert pipe.committer.request_bytes >= COMMIT_REQUEST_BYTES // 2 - 2 * MAX_METADATA_BYTES
    refused = [size for size in broker.requests if size > broker.max_bytes]
    assert len(refused) == 1  # then the bare retry, and 128 KiB requests from then on
    assert max(broker.requests[2:]) <= broker.max_bytes


def test_requests_shrunk_grow_back_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = offline_pipe("commit-regrow")
    tps = [TopicPartition(TOPIC, p) for p in range(400)]
    _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=150_000)
    asyncio.run(pipe.commit(broker))
    shrunk = pipe.committer.request_bytes
    assert shrunk < COMMIT_REQUEST_BYTES
    asyncio.run(pipe.commit(broker))
    assert pipe.committer.request_bytes == shrunk  # not within `REGROW_S`

    broker.max_bytes = 1_048_588  # the broker's limit raised (or the refusal a fault)
    monkeypatch.setattr(commits, "REGROW_S", 0.0)
    asyncio.run(pipe.commit(broker))
    assert pipe.committer.request_bytes == COMMIT_REQUEST_BYTES


def test_kafka_4s_unknown_error_on_a_large_chunk_is_taken_as_too_large() -> None:
    pipe = offline_pipe("commit-unknown-large")
    tps = [TopicPartition(TOPIC, p) for p in range(200)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=150_000, too_large=UnknownError)

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
    assert broker.taken() == offsets
    assert pipe.committer.request_bytes < COMMIT_REQUEST_BYTES
    refused = [e["limit"] for e in logged if e["event"] == "webhook_done_offsets_refused"]
    assert refused == ["message.max.bytes"]


def test_an_unknown_error_also_without_metadata_neither_shrinks_the_requests_nor_blames_size() -> (
    None
):
    """Kafka 4 answers `UNKNOWN_SERVER_ERROR` for any unexpected broker exception, and
    aiokafka maps codes it does not know (113 STALE_MEMBER_EPOCH...) to `UnknownError`."""
    pipe = offline_pipe("commit-unknown")
    tps = [TopicPartition(TOPIC, p) for p in range(200)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(
        tps, max_bytes=1_048_588, fail_at=tuple(range(1, 41)), failure=UnknownError
    )

    with capture_logs() as logged:
        for _ in range(20):  # a fault for a while: each commit is refused, also bare
            asyncio.run(pipe.commit(broker))
        assert broker.commits == []
        asyncio.run(pipe.commit(broker))  # the fault over
    assert broker.taken() == offsets
    assert pipe.committer.request_bytes == COMMIT_REQUEST_BYTES
    assert len(broker.requests) == 40 + 4  # 200 partitions in 256 KiB requests
    warned = {(e["event"], e.get("error")) for e in logged if e["log_level"] == "warning"}
    assert warned == {("commit_failed", "UnknownError")}


def test_an_unknown_error_on_a_large_chunk_taken_bare_shrinks_the_requests_until_regrow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault the bare retry outlived cannot be told from a size limit on a large chunk:
    it costs smaller requests (until `REGROW_S`), never the done offsets."""
    pipe = offline_pipe("commit-unknown-fault")
    tps = [TopicPartition(TOPIC, p) for p in range(40)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=1_048_588, fail_at=(1,), failure=UnknownError)

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))  # a fault on the first request only
    assert broker.commits[0] == {tp: (0, "") for tp in tps}  # the positions, at once
    assert broker.taken() == offsets  # and the metadata, in this same commit
    assert pipe.committer.request_bytes < COMMIT_REQUEST_BYTES
    refused = [e["limit"] for e in logged if e["event"] == "webhook_done_offsets_refused"]
    assert refused == ["message.max.bytes"]
    monkeypatch.setattr(commits, "REGROW_S", 0.0)
    asyncio.run(pipe.commit(broker))
    assert pipe.committer.request_bytes == COMMIT_REQUEST_BYTES


def test_an_unknown_error_on_a_small_chunk_is_a_fault_its_metadata_at_the_next_commit() -> None:
    pipe = offline_pipe("commit-unknown-small")
    tps = [TopicPartition(TOPIC, p) for p in range(4)]  # ~16 KiB: no broker's limit
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=1_048_588, fail_at=(1,), failure=UnknownError)

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
        assert broker.taken() == {tp: (0, "") for tp in tps}  # the positions, at once
        assert pipe.committer.request_bytes == COMMIT_REQUEST_BYTES  # not shrunk
        asyncio.run(pipe.commit(broker))
    assert broker.taken() == offsets  # the done offsets at the next commit
    refused = [e["limit"] for e in logged if e["event"] == "webhook_done_offsets_refused"]
    assert refused == ["UnknownError"]


class RefusingMetadata(SizedBroker):
    """A broker that answers `UnknownError` to every request carrying metadata (a fault
    that lasts, or a `message.max.bytes` far below any default)."""

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if any(metadata for _offset, metadata in offsets.values()):
            self.requests.append(0)
            raise UnknownError
        await super().commit(offsets)


def test_a_broker_refusing_every_metadata_does_not_shrink_the_requests_to_one_partition() -> None:
    """Each refusal shrank the requests and restarted `REGROW_S`: 800 requests per commit
    for 400 partitions, for ever."""
    pipe = offline_pipe("commit-unknown-always")
    tps = [TopicPartition(TOPIC, p) for p in range(400)]
    _held(pipe.tracker, tps)
    broker = RefusingMetadata(tps, max_bytes=1_048_588)

    per_commit = []
    for _ in range(3):
        before = len(broker.requests)
        asyncio.run(pipe.commit(broker))
        per_commit.append(len(broker.requests) - before)
        assert broker.taken() == {tp: (0, "") for tp in tps}  # every position passes
    assert pipe.committer.request_bytes >= commits.UNKNOWN_FLOOR_BYTES // 2
    assert (
        max(per_commit[1:])
        <= 2 * 400 * entry_bytes(Commit(0, "x" * 3000)) // (commits.UNKNOWN_FLOOR_BYTES // 2) + 2
    )


def test_a_revocations_commit_refused_as_too_large_keeps_every_partitions_done_offsets() -> None:
    """The listener forgets the revoked partitions after its commit (and a stop has no
    next commit): the metadata of a chunk refused as too large must pass in it."""
    pipe = offline_pipe("commit-revoke-large")
    tps = [TopicPartition(TOPIC, p) for p in range(200)]
    offsets = _held(pipe.tracker, tps)
    broker = SizedBroker(tps, max_bytes=150_000)  # the first 256 KiB request is refused

    asyncio.run(RebalanceListener(pipe, broker).on_partitions_revoked(tps))
    assert broker.taken() == offsets


def test_a_partition_whose_metadata_alone_is_too_large_commits_without_it_from_then_on() -> None:
    pipe = offline_pipe("commit-one-too-large")
    big, small = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    offsets = _held(pipe.tracker, [big])
    pipe.tracker.restore(small, [(2, 3)])
    pipe.tracker.consumed(small, 0, 1)
    offsets[small] = pipe.tracker.committable()[small]
    broker = SizedBroker([big, small], max_bytes=2_000)  # below `big`'s metadata alone

    for _ in range(3):
        asyncio.run(pipe.commit(broker))
    assert broker.taken() == {big: (0, ""), small: offsets[small]}  # the other keeps its own
    sent = len(broker.requests)
    asyncio.run(pipe.commit(broker))
    assert len(broker.requests) == sent  # not refused again at every commit
    assert pipe.tracker.committable() == {}


def test_metadata_refused_on_a_later_chunk_commits_them_all_without_it() -> None:
    class MetadataLimit(SizedBroker):
        async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
            if len(self.requests) >= 1 and any(m for _o, m in offsets.values()):
                self.requests.append(0)
                raise OffsetMetadataTooLargeError
            await super().commit(offsets)

    pipe = offline_pipe("commit-metadata-later")
    tps = [TopicPartition(TOPIC, p) for p in range(200)]
    _held(pipe.tracker, tps)
    for tp in tps:
        pipe.tracker.done(tp, 0)  # positions at 1, the done offsets above
    offsets = pipe.tracker.committable()
    broker = MetadataLimit(tps, max_bytes=1_048_588)

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
    assert all(offsets[tp] == c for tp, c in broker.commits[0].items())  # taken with it
    assert {tp: offset for tp, (offset, _m) in broker.taken().items()} == {tp: 1 for tp in tps}
    asyncio.run(pipe.commit(broker))  # the rest, and from now on, without metadata
    assert broker.taken() == {tp: (1, "") for tp in tps}
    assert pipe.tracker.committable() == {}
    refused = [e["limit"] for e in logged if e["event"] == "webhook_done_offsets_refused"]
    assert refused == ["offset.metadata.max.bytes"]


class _HeldBroker(FakeConsumer):
    """Holds the first commit request until `release` (and `held_s` more), and lets the
    requests after it pass it (aiokafka retries a request after a retriable error, such
    as a coordinator moving, only after a backoff, and takes the next one meanwhile);
    `senders`: the task that sent each request taken."""

    def __init__(self, tps: list[TopicPartition], held_s: float = 0.0) -> None:
        super().__init__(tps)
        self.held_s = held_s
        self.in_flight, self.release = asyncio.Event(), asyncio.Event()
        self.senders: list[asyncio.Task[Any] | None] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if not offsets.keys() <= self._assigned:
            raise IllegalStateError("not assigned")
        if not self.in_flight.is_set():
            self.in_flight.set()
            await self.release.wait()
            await asyncio.sleep(self.held_s)
        await asyncio.sleep(0)  # an answer over the network: the commit's timeout can fire
        self.senders.append(asyncio.current_task())
        await super().commit(offsets)


async def _revoked_during_a_periodic_commit(
    pipe: EndpointPipe,
    broker: _HeldBroker,
    tps: list[TopicPartition],
    listener_timeout_s: float | None = None,
) -> tuple[asyncio.Task[None], dict[TopicPartition, Commit]]:
    """Revoke `tps` while the periodic commit's first chunk is held, their deliveries
    finished meanwhile; the periodic commit's task, and what the revocation commits.
    `listener_timeout_s`: the `COMMIT_TIMEOUT_S` of the commits started after the
    periodic one (the caller's monkeypatch restores it)."""
    periodic = asyncio.create_task(pipe.commit(broker))  # the consume loop's
    await asyncio.wait_for(broker.in_flight.wait(), 5)  # its first chunk in flight
    if listener_timeout_s is not None:
        sink_consumer.COMMIT_TIMEOUT_S = listener_timeout_s
    for tp in tps:
        pipe.tracker.done(tp, 0)  # delivered, and the records above read meanwhile
        for offset in range(1, 300):
            pipe.tracker.consumed(tp, offset, 0)
    newest = pipe.tracker.committable()
    revoking = asyncio.create_task(RebalanceListener(pipe, broker).on_partitions_revoked(tps))
    for _ in range(20):  # the revocation's commit gets as far as it can
        await asyncio.sleep(0)
    assert pipe.committer._revocations == 1  # waiting for the lock
    broker.release.set()
    await asyncio.wait_for(asyncio.gather(periodic, revoking), 5)
    return periodic, newest


def test_a_rebalance_during_a_chunked_commit_does_not_move_committed_positions_back() -> None:
    """The revocation's commit (aiokafka's coordinator task) starts while the periodic
    one (the consume task) has chunks left, built from older values: sent after the
    revocation's, they would move the positions back, and the next owner would post
    again what was finished in between (the listener forgets the partitions). The
    periodic commit makes way after its chunk in flight: its chunks left are the
    listener's to send."""
    pipe = offline_pipe("commit-rebalance")
    tps = [TopicPartition(TOPIC, p) for p in range(200)]
    _held(pipe.tracker, tps)
    broker = _HeldBroker(tps)

    periodic, newest = asyncio.run(_revoked_during_a_periodic_commit(pipe, broker, tps))
    taken = {tp: c for commit in broker.commits for tp, c in commit.items()}
    assert {tp: taken[tp] for tp in tps} == newest
    assert broker.senders.count(periodic) == 1  # its chunk in flight, no more


def test_a_revocations_commit_has_its_whole_timeout_after_the_periodic_ones_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listener's wait for the lock does not count against its `COMMIT_TIMEOUT_S`:
    a slow request of the periodic commit would leave it too little."""
    # the periodic commit's own deadline far (a busy machine's loop turns do not end it);
    # the listener's 0.3 s, less than the periodic's chunk takes after the revocation
    monkeypatch.setattr(sink_consumer, "COMMIT_TIMEOUT_S", 30.0)
    pipe = offline_pipe("commit-rebalance-slow")
    tps = [TopicPartition(TOPIC, p) for p in range(200)]
    _held(pipe.tracker, tps)
    broker = _HeldBroker(tps, held_s=0.4)  # the periodic's chunk answers slowly

    with capture_logs() as logged:
        _periodic, newest = asyncio.run(
            _revoked_during_a_periodic_commit(pipe, broker, tps, listener_timeout_s=0.3)
        )
    taken = {tp: c for commit in broker.commits for tp, c in commit.items()}
    assert {tp: taken[tp] for tp in tps} == newest
    assert [e for e in logged if e["event"] == "commit_failed"] == []


def test_a_commit_waiting_for_another_gives_up_within_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The final commit at stop waits for the lock within its `COMMIT_TIMEOUT_S`: the stop
    deadline budgets one (notify_runner.py)."""
    monkeypatch.setattr(sink_consumer, "COMMIT_TIMEOUT_S", 0.2)
    pipe = offline_pipe("commit-lock-wait")
    tps = [TopicPartition(TOPIC, p) for p in range(2)]
    _held(pipe.tracker, tps)

    async def run() -> None:
        async with pipe.committer._lock:  # a commit that does not end
            await asyncio.wait_for(pipe.commit(FakeConsumer(tps)), 5)

    with capture_logs() as logged:
        asyncio.run(run())
    assert [e["error"] for e in logged if e["event"] == "commit_failed"] == ["TimeoutError"]


def test_metadata_refused_also_after_leaving_it_out_fails_the_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`OffsetMetadataTooLargeError` on a commit without metadata is no metadata limit:
    leaving the metadata out again would retry it until the commit's timeout."""

    class Refusing(FakeConsumer):
        requests = 0

        async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
            self.requests += 1
            await asyncio.sleep(0)
            raise OffsetMetadataTooLargeError

    monkeypatch.setattr(sink_consumer, "COMMIT_TIMEOUT_S", 0.5)
    pipe = offline_pipe("commit-metadata-always")
    tps = [TopicPartition(TOPIC, p) for p in range(2)]
    _held(pipe.tracker, tps)
    for tp in tps:
        pipe.tracker.done(tp, 0)  # positions at 1: there is a commit without metadata
    broker = Refusing(tps)

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
    assert broker.requests == 2  # with its metadata, then without
    failed = [e["error"] for e in logged if e["event"] == "commit_failed"]
    assert failed == ["OffsetMetadataTooLargeError"]


def test_a_partition_revoked_between_chunks_leaves_the_others_committed() -> None:
    class Rebalancing(FakeConsumer):
        async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
            if not self.commits and len(self._assigned) == 200:  # while the first is sent
                self._assigned = {tp for tp in self._assigned if tp.partition >= 100}
            if not offsets.keys() <= self._assigned:
                raise IllegalStateError("not assigned")  # as aiokafka
            await super().commit(offsets)

    pipe = offline_pipe("commit-revoked")
    tps = [TopicPartition(TOPIC, p) for p in range(200)]
    offsets = _held(pipe.tracker, tps)
    broker = Rebalancing(tps)

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
    taken = {tp: c for commit in broker.commits for tp, c in commit.items()}
    assert taken == {tp: c for tp, c in offsets.items() if tp.partition >= 100}
    assert [e["event"] for e in logged if e["log_level"] == "warning"] == []


def test_a_slow_broker_costs_one_commit_timeout_for_the_whole_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop deadline budgets one `COMMIT_TIMEOUT_S` for the final commit
    (notify_runner.py): beyond it, recorded outcomes went uncommitted."""

    class Slow(SizedBroker):
        async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
            await asyncio.sleep(0.2)  # answers, slowly
            await super().commit(offsets)

    monkeypatch.setattr(sink_consumer, "COMMIT_TIMEOUT_S", 0.5)
    pipe = offline_pipe("commit-slow")
    tps = [TopicPartition(TOPIC, p) for p in range(400)]
    offsets = _held(pipe.tracker, tps)
    broker = Slow(tps, max_bytes=1_048_588)  # 7 chunks of 0.2 s

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
    assert [e["error"] for e in logged if e["event"] == "commit_failed"] == ["TimeoutError"]
    taken = broker.taken()
    assert taken
    assert pipe.tracker.committable() == {tp: c for tp, c in offsets.items() if tp not in taken}


def test_a_commit_ends_at_its_timeout_also_when_the_loop_was_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline firing in the loop turn a request's answer arrives (the loop busy past
    it) still ends the commit: Python 3.11's `asyncio.wait_for` around each request
    swallowed that cancellation, and the commit ran on unbounded."""

    class Late(SizedBroker):
        async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
            if not self.requests:
                loop = asyncio.get_running_loop()
                answer = loop.create_future()
                loop.call_later(0.01, answer.set_result, None)  # the broker answers...
                time.sleep(0.55)  # noqa: ASYNC251 - the loop busy past the deadline
                await answer
            else:
                await asyncio.sleep(0.3)  # later requests: a slow broker
            await super().commit(offsets)

    # the request's answer due before the deadline (the commit's set-up takes some 0.1 s)
    monkeypatch.setattr(sink_consumer, "COMMIT_TIMEOUT_S", 0.5)
    pipe = offline_pipe("commit-late-loop")
    tps = [TopicPartition(TOPIC, p) for p in range(400)]
    _held(pipe.tracker, tps)
    broker = Late(tps, max_bytes=1_048_588)  # 7 requests

    with capture_logs() as logged:
        asyncio.run(pipe.commit(broker))
    assert [e["error"] for e in logged if e["event"] == "commit_failed"] == ["TimeoutError"]
    assert len(broker.requests) <= 2


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
            # the group's coordinator answers first (its committed offsets: none yet): the
            # commit's COMMIT_TIMEOUT_S (10 s) is for the commit, not for a broker's
            # first group, whose `__consumer_offsets` is made and loaded then (52 refusals,
            # over 10 s, beside a CPU hog: no position committed, this test's one flake)
            await asyncio.wait_for(consumer._coordinator.fetch_committed_offsets(tps), 60)
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
                await commits(whole, unique("commit-whole"), 1),
            )
        finally:
            await admin.delete_topics([topic])  # 360 partition directories fewer
            await admin.close()

    with capture_logs() as logged:
        [in_chunks], [kept] = asyncio.run(run())
    assert in_chunks == offsets  # in chunks: each position with its done offsets
    assert all(decode(0, metadata) == DONE for _offset, metadata in in_chunks.values())
    # sent whole, refused: the positions at once, then in smaller requests with metadata,
    # in the same commit
    assert kept == offsets
    refused = [(e["endpoint"], e["limit"]) for e in logged if e["event"].endswith("_refused")]
    assert refused == [("commit-real-whole", "message.max.bytes")]
