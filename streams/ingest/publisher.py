"""Publishing a request's records to Kafka all-or-nothing: each request in one transaction.

An idempotent producer alone cannot promise "nothing half-published": when the
broker goes away after some batches of a request were written, those stay.
So every request is one Kafka transaction (begin, send all, await every ack,
commit); any failure or timeout aborts it and the caller answers 503. Records
of an aborted transaction are still in the log, so **consumers must read with
`isolation_level="read_committed"`** to never see them.

Transactions on one producer are sequential, so the publisher keeps a small
pool of producers (`transactional_id` = `<base>-<n>`). Requests that arrive
while every producer is busy wait, and the next free producer commits the
waiting ones together in one transaction (group commit, `streams.ingest.groups`):
each request's records are still in one transaction, and every request of a
group gets the group's outcome (its own placements, or the same 503). A group
that Kafka refuses for one record's size or one topic's authorization is retried
one request at a time, so the other requests are published and only that one is
answered (413, or 503).

Ids are stable per gateway instance: a restarted gateway fences its
predecessor's producers and aborts whatever they left open, instead of letting
read-committed consumers wait for the transaction timeout. A producer that
failed is closed (in the background) and rebuilt on next use, which likewise
aborts its open transaction. A broker that is down at start-up is not fatal:
producers start lazily, and `/readyz` says whether the broker answers.

Deadlines: a request's whole publish - waiting for a free producer, starting it,
the transaction - is bounded by `publish_timeout_s`, so a client gets its 503
within that time whatever the broker does (down, or accepting connections and
never answering): a request still waiting at its deadline leaves the queue
(nothing published), and a group's transaction is bounded by its members'
earliest deadline. A request cancelled (a shutdown) cancels its group's
transaction, which is aborted as a cancelled request's always was. Readiness
checks use their own client, never a producer of the pool, so probes cannot
queue ahead of ingest. Every deadline here is `schemas.deadline`: an
`asyncio.timeout` that also raises a cancel of our task (the gateway's shutdown)
that aiokafka's close swallowed; Python 3.11's `asyncio.wait_for` dropped a
cancellation that came as the awaited call finished."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, TopicAuthorizationFailedError
from aiokafka.structs import RecordMetadata

from schemas.aiokafka_private import SENDER_STOP_S, drop_unsent, sender_task
from schemas.bounded_wait import ended_within, retrieve
from schemas.deadline import deadline
from schemas.kafka_security import Kafka, aiokafka_kwargs
from streams.ingest.groups import GroupBounds, Member, take_group
from streams.ingest.records import OutRecord, Placement
from streams.partitioning import CachedPartitioner

log = structlog.stdlib.get_logger(__name__)


class PublishUnavailable(Exception):
    """Kafka did not take the whole request (503): nothing of it is committed, unless
    `outcome_unknown` - the commit had been sent when Kafka stopped answering, and
    Kafka may still have carried it out (seen: a broker frozen mid-commit, then
    resumed, committed requests already answered 503).

    `kafka_failed`: Kafka itself failed (unreachable, a Kafka call timed out), which is
    what the gateway's readiness and outage log record. Not so for a request refused for
    its own time (`PublishOutOfTime`), cut by a stop (`PublishStopped`), refused one topic
    (`PublishNotAuthorized`) or failed by a fault of the gateway's own (`PublishFailed`):
    under plain overload those made `/readyz` say not ready, and a load balancer pulled a
    gateway whose Kafka was healthy."""

    def __init__(
        self, text: str, *, outcome_unknown: bool = False, kafka_failed: bool = True
    ) -> None:
        super().__init__(text)
        self.outcome_unknown = outcome_unknown
        self.kafka_failed = kafka_failed


class PublishOutOfTime(PublishUnavailable):
    """The request's own deadline, not Kafka's failure: it waited for a busy producer until
    its time passed, was left behind in a retry one at a time, or its try had less time
    than a producer's start may take (`min_publish_s`). Plain overload with a healthy
    Kafka; the gateway answers it under its own code, so an alert on Kafka's is not paged."""

    def __init__(self, text: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(text, outcome_unknown=outcome_unknown, kafka_failed=False)


class PublishStopped(PublishUnavailable):
    """The gateway's stop cut the request: not Kafka's failure."""

    def __init__(self, *, outcome_unknown: bool = False) -> None:
        super().__init__("the gateway stopped", outcome_unknown=outcome_unknown, kafka_failed=False)


class PublishNotAuthorized(PublishUnavailable):
    """Kafka refused the gateway's principal one of the request's topics (an ACL missing):
    Kafka answered, and every other topic may publish fine, so it is not Kafka's failure
    (a gateway pulled from its load balancer for it would serve nothing). `topics`: the
    ones refused. Nothing of the request is committed."""

    def __init__(self, text: str, topics: Sequence[str]) -> None:
        super().__init__(text, kafka_failed=False)
        self.topics = tuple(topics)


class PublishFailed(PublishUnavailable):
    """A fault of the gateway's own (or of a library's), not Kafka's: an exception no path
    of a group's transaction names, or a group that gave its request no outcome by the
    safety net's time (`_OUTCOME_GRACE_S`; a bug or a hang in the gateway). Whether the
    request was committed is not known. Answered under its own code: as Kafka's failure
    it paged whoever runs Kafka, and the safety net made `/readyz` say not ready."""

    def __init__(self, text: str) -> None:
        super().__init__(text, outcome_unknown=True, kafka_failed=False)


@dataclass(slots=True)
class _Attempt:
    """How far one request's transaction got (read when it fails)."""

    committing: bool = False


_LEFT_BEHIND = (
    "TimeoutError: too little of its time was left to start a producer after the requests "
    "committed with it were retried one at a time"
)
"""Why a group member is answered 503 unpublished without a try of its own."""
_NOT_TRIED = "TimeoutError: its deadline passed while it waited for a free producer"
MIN_PUBLISH_S = 1.0
"""Less than this left (at most half of `publish_timeout_s`), a publish is not begun where it
would start a producer: it would only time out, and throw away the producer (a connection) it
was starting on the way. A post that waited for the topics (answered 503 at once), and a
member's try in a retry one at a time after Kafka failed the try before it. A try that timed
out with less than this is its request's lack of time, not Kafka's failure."""
_OUTCOME_GRACE_S = 5.0
"""How long past its own deadline a request waits for its group's outcome (a safety net:
every path of a group is bounded by its members' deadlines, so one that reaches it is a
bug or a hang inside the gateway, logged as an error with where its group is)."""


def min_publish_s(publish_timeout_s: float) -> float:
    """`MIN_PUBLISH_S`, or half of `publish_timeout_s` when that is less: a short timeout
    still leaves a request the half of it in which to be tried."""
    return min(MIN_PUBLISH_S, publish_timeout_s / 2)


class PublishTooLarge(Exception):
    """A record is larger than Kafka takes: retrying cannot help (413, not 503)."""


class GroupObserver(Protocol):
    """Told how each group's transaction ended (the gateway's metrics): once per
    transaction, so a group retried one request at a time counts its own failure, then
    each retry's."""

    def transaction_committed(self, requests: int, records: int) -> None: ...
    def transaction_failed(self, cause: str) -> None: ...


class Publisher(Protocol):
    def observe_groups(self, observer: GroupObserver) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def ready(self) -> bool: ...
    async def publish(
        self, records: Sequence[OutRecord], within_s: float | None = None
    ) -> list[Placement]: ...


@dataclass(frozen=True)
class PublisherConfig:
    bootstrap: Kafka
    transactional_id: str
    pool_size: int = 2
    publish_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    max_batch_size: int = 262144
    linger_ms: int = 0
    max_group_records: int = 5000
    """At most this many records in one group's transaction (the gateway's `max_items`)."""
    max_group_bytes: int = 8 * 1024 * 1024
    """At most this many key and value bytes in one (the gateway's `max_body_bytes`)."""


class TransactionalPublisher:
    """A pool of transactional aiokafka producers (acks=all, idempotence on), each
    committing groups of waiting requests."""

    def __init__(self, config: PublisherConfig) -> None:
        self.config = config
        self._producers: list[AIOKafkaProducer | None] = [None] * config.pool_size
        self._idle: list[int] = list(range(config.pool_size))
        self._waiting: deque[Member] = deque()
        self._groups: dict[asyncio.Task[None], list[Member]] = {}
        """Each group's task -> its members, while it runs."""
        self._hung: set[asyncio.Task[None]] = set()
        """Groups the safety net cancelled (`_OUTCOME_GRACE_S`): not a shutdown."""
        self._bounds = GroupBounds(
            max_records=config.max_group_records,
            max_bytes=config.max_group_bytes,
            solo_below_s=config.publish_timeout_s / 4,
        )
        self._min_start_s = min_publish_s(config.publish_timeout_s)
        self._partitioner = CachedPartitioner()
        self._probe: AIOKafkaClient | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._observer: GroupObserver | None = None

    def observe_groups(self, observer: GroupObserver) -> None:
        self._observer = observer

    async def start(self) -> None:
        """Warm one producer if the broker answers; a down broker is reported by `ready()`."""
        if not self._idle:
            return  # every producer is committing: they are warm
        slot = self._idle.pop()
        try:
            await self._producer(slot)
        except PublishUnavailable as exc:
            log.warning("kafka not reachable at start-up", error=str(exc))
        finally:
            self._idle.append(slot)
            self._dispatch()

    async def stop(self) -> None:
        while self._waiting:
            _settle(self._waiting.popleft(), PublishStopped())
        groups = set(self._groups)  # a copy: each leaves the dict as it ends
        for group in groups:
            group.cancel()  # aborts its transaction; its members get their 503
        if groups:
            await asyncio.wait(groups, timeout=10.0)
        for slot in range(self.config.pool_size):
            self._discard(slot)
        if self._probe is not None:
            probe, self._probe = self._probe, None
            with contextlib.suppress(Exception):
                async with deadline(5.0):
                    await probe.close()
        if self._closing:
            await asyncio.wait(self._closing, timeout=10.0)

    async def ready(self) -> bool:
        """True when the cluster answers a metadata request (on the probe's own client)."""
        if self._probe is None:
            probe = AIOKafkaClient(
                **aiokafka_kwargs(self.config.bootstrap),
                request_timeout_ms=int(self.config.connect_timeout_s * 1000),
                client_id=f"{self.config.transactional_id}-probe",
            )
            try:
                async with deadline(self.config.connect_timeout_s):
                    await probe.bootstrap()
            except (KafkaError, OSError, TimeoutError):
                self._close_later(probe.close())
                return False
            self._probe = probe
        try:
            async with deadline(self.config.connect_timeout_s):
                await self._probe.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def publish(
        self, records: Sequence[OutRecord], within_s: float | None = None
    ) -> list[Placement]:
        """Publish every record in one transaction (its group's); return placements only
        after the commit.

        The whole of it (a free producer, starting it, the transaction) within
        `within_s` (what is left of the request's budget; default
        `publish_timeout_s`), else `PublishUnavailable`.
        """
        if not records:
            return []
        within = self.config.publish_timeout_s if within_s is None else within_s
        loop = asyncio.get_running_loop()
        member = Member(records, loop.time() + within, loop.create_future())
        member.outcome.add_done_callback(retrieve)  # a cancelled member's outcome is not read
        self._waiting.append(member)
        self._dispatch()
        try:
            try:
                async with deadline(within):
                    return await asyncio.shield(member.outcome)
            except TimeoutError:
                if member.group is None and not member.outcome.done():
                    self._waiting.remove(member)
                    raise PublishOutOfTime(
                        f"TimeoutError: no free producer within {round(within, 3)} s"
                    ) from None
            # its group's deadline is ours or earlier: due now; bounded all the same, so a
            # fault in a group can never hold a request (and its admission slot) for ever
            try:
                async with deadline(_OUTCOME_GRACE_S):
                    return await asyncio.shield(member.outcome)
            except TimeoutError:
                waited = round(within + _OUTCOME_GRACE_S, 3)
                log.error(
                    "group gave no outcome",
                    waited_s=waited,
                    records=len(records),
                    **_group_state(member.group),
                )
                text = f"TimeoutError: no answer from its transaction within {waited} s"
                if member.group is not None and not member.group.done():
                    self._give_up_on(member.group, text)
                raise PublishFailed(text) from None
        except asyncio.CancelledError:
            # A shutdown cancelled the request: its transaction may be open, and is
            # aborted (its group's other members are being cancelled too).
            if member.group is not None:
                member.group.cancel()
            elif member in self._waiting:
                self._waiting.remove(member)
            raise

    def _dispatch(self) -> None:
        """Hand waiting requests to idle producers, one group per producer."""
        while self._waiting and self._idle:
            slot = self._idle.pop()
            members = take_group(self._waiting, self._bounds, asyncio.get_running_loop().time())
            group = asyncio.get_running_loop().create_task(self._serve(slot, members))
            for member in members:
                member.group = group
            self._groups[group] = members
            group.add_done_callback(self._forget)

    def _forget(self, group: asyncio.Task[None]) -> None:
        self._groups.pop(group, None)
        self._hung.discard(group)

    def _give_up_on(self, group: asyncio.Task[None], text: str) -> None:
        """A group past the safety net: its members are answered `PublishFailed(text)` and
        it is cancelled, so that its slot comes back (a hang that honours cancellation; with
        a pool of one, a slot kept by a hung group had every later request wait in vain)."""
        for member in self._groups.get(group, ()):  # an exception each: a raise adds to it
            _settle(member, PublishFailed(text))
        self._hung.add(group)
        group.cancel()

    async def _serve(self, slot: int, members: list[Member]) -> None:
        try:
            await self._commit_group(slot, members)
        except Exception:
            # a fault outside the transaction's own handling (its refusal's retry): nothing
            # awaits this task, so it is logged here, not left as "never retrieved"
            log.exception("group failed", requests=len(members))
        finally:
            for member in members:  # whatever happened, nobody waits for ever
                _settle(member, PublishFailed("publishing failed"))  # a fault of ours
            self._idle.append(slot)
            self._dispatch()

    async def _commit_group(self, slot: int, members: list[Member]) -> bool:
        """One transaction for every member; each member's outcome is set. True when Kafka
        failed it (did not answer in time, or could not be reached), the judgement its
        members' refusals carry (`kafka_failed`): the slot's next producer may then take
        all the time there is to start. Not when Kafka refused it (it answered), nor when
        the try timed out with less time than a producer's start may take: that timed out
        for its request's lack of time and says nothing of Kafka."""
        loop = asyncio.get_running_loop()
        within = min(member.deadline_at for member in members) - loop.time()
        if within <= 0:
            # its deadline passed as it was taken off the queue (before its own wait saw
            # it): it waited, Kafka was not tried - nor a warm producer thrown away
            for member in members:  # alone: `take_group` gives a member so late no company
                _settle(member, PublishOutOfTime(_NOT_TRIED))
            return False
        records = [record for member in members for record in member.records]
        attempt = _Attempt()
        try:
            async with deadline(max(within, 0.0)):
                producer = await self._producer(slot)
                placements = await self._transaction(producer, records, attempt)
        except (MessageSizeTooLargeError, TopicAuthorizationFailedError) as exc:
            await self._refused(slot, members, exc)
            return False
        except (KafkaError, OSError, TimeoutError, PublishUnavailable) as exc:
            self._discard(slot)  # closing aborts; a new producer fences the id
            if attempt.committing:
                self._failed("commit_unanswered")
            else:
                self._failed("deadline" if isinstance(exc, TimeoutError) else "kafka_error")
            text = str(exc) or f"no commit within {round(within, 3)} s"
            if not isinstance(exc, PublishUnavailable):
                text = f"{type(exc).__name__}: {text}"
            # a transaction given less time than a producer's start may take timed out
            # for its request's lack of time, not for Kafka's failure
            kafka_failed = not isinstance(exc, TimeoutError) or within >= self._min_start_s
            unknown = attempt.committing
            for member in members:  # an exception each: a raise adds to its traceback
                _settle(
                    member,
                    PublishUnavailable(text, outcome_unknown=unknown)
                    if kafka_failed
                    else PublishOutOfTime(text, outcome_unknown=unknown),
                )
            return kafka_failed
        except asyncio.CancelledError:
            # a shutdown, or the safety net giving up on the group (its members are
            # answered): the transaction may be open; the slot gets a new producer
            # (closing this one aborts the transaction)
            self._discard(slot)
            self._failed("hung" if asyncio.current_task() in self._hung else "shutdown")
            for member in members:
                _settle(member, PublishStopped(outcome_unknown=attempt.committing))
            raise
        except Exception:
            # a fault of ours or a library's: the transaction may be open, so the slot's
            # producer goes (the next group would fail on it too); logged here, as nothing
            # awaits this task (asyncio's "exception was never retrieved" was all there was).
            # Its members are answered here, "not known": in a retry one at a time, left to
            # `_serve`, one waited for every later retry. Not Kafka's failure, as returned.
            self._discard(slot)
            self._failed("unexpected")
            log.exception("group transaction failed", requests=len(members), records=len(records))
            for member in members:
                _settle(member, PublishFailed("publishing failed"))
            return False
        else:
            if self._observer is not None:
                self._observer.transaction_committed(len(members), len(records))
            start = 0
            for member in members:
                end = start + len(member.records)
                _settle(member, placements[start:end])
                start = end
            return False

    async def _refused(
        self,
        slot: int,
        members: list[Member],
        exc: MessageSizeTooLargeError | TopicAuthorizationFailedError,
    ) -> None:
        """Kafka refused one request's record (too large) or topic (not authorized): the
        group's other members must not fail with it, so each is tried alone."""
        self._discard(slot)
        self._failed(
            "record_too_large"
            if isinstance(exc, MessageSizeTooLargeError)
            else "topic_not_authorized"
        )
        if len(members) > 1:
            await self._commit_one_by_one(slot, members)
            return
        if isinstance(exc, MessageSizeTooLargeError):
            refusal: Exception = PublishTooLarge(f"Kafka refuses a record this large: {exc}")
        else:
            refusal = PublishNotAuthorized(
                f"{type(exc).__name__}: {exc}", _refused_topics(exc, members[0].records)
            )
        _settle(members[0], refusal)

    def _failed(self, cause: str) -> None:
        if self._observer is not None:
            self._observer.transaction_failed(cause)

    async def _commit_one_by_one(self, slot: int, members: list[Member]) -> None:
        """Each member in a transaction of its own, after one member's refusal aborted
        their group's (nothing of it was committed).

        Earliest deadline first: each is then done by its own deadline, not kept
        waiting by a member behind which it arrived. A member whose deadline passed
        meanwhile, or whose try would have to start a producer after Kafka failed the
        try before it (not after a refusal: Kafka answered that at once; nor after a try
        that timed out with less than that left: its own lack of time says nothing of
        Kafka, as its refusal says) with less than `min_publish_s` left, or with no more
        time than such a try that timed out had, is answered at once, never tried
        (each such try started a producer only to cancel it: a group of thousands of
        single scans behind one stuck partition opened as many connections, as their
        deadlines, a few ms apart, came one after the other); a shutdown that cuts
        the retry tells the members not yet tried that nothing of theirs was published
        (they were told "not known").
        """
        loop = asyncio.get_running_loop()
        queue = deque(sorted(members, key=lambda m: m.deadline_at))
        kafka_failed = False  # the group's own refusal came from a Kafka that answered
        too_short = 0.0  # the time of the last try that timed out for its own lack of it
        try:
            while queue:
                member = queue.popleft()
                left = member.deadline_at - loop.time()
                if left <= 0 or (kafka_failed and left < self._min_start_s) or left <= too_short:
                    _settle(member, PublishOutOfTime(_LEFT_BEHIND))
                else:
                    kafka_failed = await self._commit_group(slot, [member])
                    timed_out = isinstance(_refusal_of(member), PublishOutOfTime)
                    too_short = left if timed_out else 0.0  # a warm producer needs no start
        except asyncio.CancelledError:
            for member in queue:
                _settle(member, PublishStopped())
            raise

    async def _transaction(
        self, producer: AIOKafkaProducer, records: Sequence[OutRecord], attempt: _Attempt
    ) -> list[Placement]:
        await producer.begin_transaction()
        retrieve_transaction_outcome(producer)  # the commit below may be given up on
        placements = await self._send_batched(producer, records)
        await self._acknowledged(records)
        attempt.committing = True  # from here a failure cannot say "nothing committed"
        await self._commit(producer)
        return placements

    async def _send_batched(
        self, producer: AIOKafkaProducer, records: Sequence[OutRecord]
    ) -> list[Placement]:
        """One record batch per partition instead of one future per record.

        `send()` costs ~100 us of Python per record on this hardware, which
        capped the gateway below the 10k events/s goal; building the batches
        here costs a fraction of that. Partitions come from aiokafka's default
        partitioner (murmur2, the Java client's), so keys land where every other
        producer puts them.
        """
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        for index, record in enumerate(records):
            known = partitions.get(record.topic)
            if known is None:
                every = sorted(await producer.partitions_for(record.topic))
                up = producer.client.cluster.available_partitions_for_topic(record.topic)
                known = partitions[record.topic] = (every, sorted(up or every))
            partition = self._partitioner(record.key, known[0], known[1])
            groups.setdefault((record.topic, partition), []).append(index)

        pending: list[tuple[asyncio.Future[RecordMetadata], list[tuple[int, int]]]] = []
        try:
            await _send_groups(producer, records, groups, pending)
            # Every batch's outcome is taken: with the first failure raised at once, the
            # others' failures were logged later as "Future exception was never retrieved".
            # `wait`, not `gather`: a cancel (the request's deadline) must leave the batch
            # futures be. aiokafka's is a shield of the batch's own, and a cancelled shield
            # drops its hold on it: a batch failed later (Kafka gone: LeaderNotAvailable)
            # was logged "never retrieved", one per partition of the request.
            if pending:
                await asyncio.wait([future for future, _ in pending])
        except BaseException:
            for future, _ in pending:  # a request given up on: its batches end unread
                future.add_done_callback(retrieve)
            raise
        results: list[RecordMetadata] = []
        for future, _ in pending:
            failure = future.exception()  # each one's taken, the first raised
            if failure is not None:
                for rest, _ in pending:
                    rest.add_done_callback(retrieve)
                raise failure
            results.append(future.result())
        placements: list[Placement | None] = [None] * len(records)
        for meta, (_, members) in zip(results, pending, strict=True):
            for index, relative in members:
                placements[index] = Placement(meta.partition, meta.offset + relative)
        return [p for p in placements if p is not None]

    async def _acknowledged(self, records: Sequence[OutRecord]) -> None:
        """Every record is in the log, not yet committed: the seam where fault-injection
        tests make the broker "fail" at the worst moment."""

    async def _commit(self, producer: AIOKafkaProducer) -> None:
        """Commit the transaction: the seam where fault-injection tests lose its answer."""
        await producer.commit_transaction()

    async def _producer(self, slot: int) -> AIOKafkaProducer:
        existing = self._producers[slot]
        if existing is not None:
            return existing
        producer = AIOKafkaProducer(
            **aiokafka_kwargs(self.config.bootstrap),
            acks="all",
            enable_idempotence=True,
            transactional_id=f"{self.config.transactional_id}-{slot}",
            max_batch_size=self.config.max_batch_size,
            linger_ms=self.config.linger_ms,
            request_timeout_ms=int(self.config.publish_timeout_s * 1000),
            client_id=f"{self.config.transactional_id}-{slot}",
        )
        try:
            async with deadline(self.config.connect_timeout_s):
                await producer.start()
        except BaseException as exc:
            self._close_later(producer.stop())
            if isinstance(exc, KafkaError | OSError | TimeoutError):
                raise PublishUnavailable(f"cannot reach Kafka: {type(exc).__name__}") from exc
            raise
        self._producers[slot] = producer
        return producer

    def _discard(self, slot: int) -> None:
        """Take the slot's producer out of use and close it in the background: closing
        (which aborts its open transaction) must not delay the caller's answer."""
        producer, self._producers[slot] = self._producers[slot], None
        if producer is not None:
            self._close_later(_abort_and_stop(producer))

    def _close_later(self, closing: Awaitable[object]) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                async with deadline(10.0):
                    await closing

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _send_groups(
    producer: AIOKafkaProducer,
    records: Sequence[OutRecord],
    groups: dict[tuple[str, int], list[int]],
    pending: list[tuple[asyncio.Future[RecordMetadata], list[tuple[int, int]]]],
) -> None:
    """Ship each partition's records in as few batches as fit; each batch's future and
    its members (record index, offset within the batch) go to `pending` as it is sent."""
    for (topic, partition), indices in groups.items():
        batch = producer.create_batch()
        members: list[tuple[int, int]] = []
        for index in indices:
            record = records[index]
            meta = batch.append(timestamp=None, key=record.key, value=record.value)
            if meta is None:  # batch full: ship it, start the next one
                if not members:
                    raise MessageSizeTooLargeError(f"record {index} exceeds max_batch_size")
                future = await producer.send_batch(batch, topic, partition=partition)
                pending.append((future, members))
                batch, members = producer.create_batch(), []
                meta = batch.append(timestamp=None, key=record.key, value=record.value)
                if meta is None:
                    raise MessageSizeTooLargeError(f"record {index} exceeds max_batch_size")
            members.append((index, meta.offset))
        future = await producer.send_batch(batch, topic, partition=partition)
        pending.append((future, members))


async def _abort_and_stop(producer: AIOKafkaProducer) -> None:
    """Abort the producer's transaction if Kafka answers at once, then stop it without
    sending anything more.

    Its request has had its answer (a 503, or a shutdown). `stop()` alone first
    waits for the pending batches and lets the sender retry: while Kafka was
    down the 10 s close deadline cut it short and the sender went on retrying
    the commit (seen as `ProducerFenced` tracebacks once Kafka was back), so a
    request answered 503 could still have been committed had Kafka come back
    before the slot's new producer fenced this one. Now the sender is stopped
    first; the transaction stays open until the new producer of the slot (or
    Kafka's transaction timeout) aborts it.
    """
    try:
        with contextlib.suppress(Exception):
            async with deadline(2.0):
                await producer.abort_transaction()
        task = sender_task(producer)
        if task is not None and not task.done():
            # its own failure is known (it is being stopped) and retrieved; waited for a
            # while, never for ever, and a cancel of this close (its deadline, a
            # shutdown) ends it: `await task` swallowed-or-hung both ways
            await ended_within(task, SENDER_STOP_S, cancel=True)
        drop_unsent(producer)
        await producer.stop()
    finally:
        retrieve_transaction_outcome(producer)


def retrieve_transaction_outcome(producer: AIOKafkaProducer) -> None:
    """Mark the outcome of the producer's last transaction as seen.

    A producer given up on (its commit timed out, Kafka went away) is fenced by
    the new one of its slot: aiokafka then sets `ProducerFenced` on a transaction
    future nobody awaits any more, and asyncio logged it as an error with a
    traceback ("Future exception was never retrieved") long after the request
    had its 503. The outcome is known and handled: the slot has a new producer.
    """
    manager = getattr(producer, "_txn_manager", None)
    waiter = getattr(manager, "_transaction_waiter", None)
    if isinstance(waiter, asyncio.Future):
        waiter.add_done_callback(retrieve)  # at once if it is done


def _group_state(group: asyncio.Task[None] | None) -> dict[str, object]:
    """Where a request's group is, for the safety net's error: no group (the request was
    never taken off the queue), its task's state, and for a task still running the
    coroutines it waits in, outermost first (`Task.get_stack` names only the outermost)."""
    if group is None:
        return {"group": "none"}
    if group.done():
        return {"group": "cancelled" if group.cancelled() else "done"}
    awaiting: list[str] = []
    step: object = group.get_coro()
    while (frame := getattr(step, "cr_frame", None)) is not None:
        awaiting.append(f"{frame.f_code.co_qualname} ({frame.f_code.co_filename}:{frame.f_lineno})")
        step = getattr(step, "cr_await", None)
    return {"group": "running", "waiting_in": awaiting}


def _refused_topics(exc: TopicAuthorizationFailedError, records: Sequence[OutRecord]) -> list[str]:
    """The topics Kafka named in its refusal (aiokafka gives one, or a set from a
    transaction's partitions), else every topic of the request."""
    named = exc.args[0] if exc.args else None
    if isinstance(named, str):
        return [named]
    if isinstance(named, list | set | frozenset | tuple) and named:
        return sorted(str(topic) for topic in named)
    return sorted({record.topic for record in records})


def _refusal_of(member: Member) -> BaseException | None:
    """The exception a settled member was refused with (None: committed, or not settled)."""
    outcome = member.outcome
    return outcome.exception() if outcome.done() and not outcome.cancelled() else None


def _settle(member: Member, outcome: list[Placement] | BaseException) -> None:
    """Give a member its outcome, unless it has one."""
    if member.outcome.done():
        return
    if isinstance(outcome, BaseException):
        member.outcome.set_exception(outcome)
    else:
        member.outcome.set_result(outcome)
