"""A rebalance does not let one assignment's deliveries settle another's.

aiokafka rebalances eagerly: every partition is revoked, and the one a notifier
keeps is assigned to it again and read again from its committed position, while
deliveries read before the revocation are still queued or being retried. Their
outcomes landed on the new assignment: a done released the same offset pending
again (the commit passed a record still being delivered: a crash lost it), a
give-up forgot the message the re-read remembered (the next re-announcement was
posted again), and queued ones were delivered as well as their re-read. These
tests drive one endpoint's pipe and its rebalance listener without Kafka or HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from sink_samples import make_alert
from webhook_pipes import FakeConsumer, LogProducer, offline_pipe, records_of

from schemas.alerts import Alert
from sinks.webhooks.delivery import DeliveryResult
from sinks.webhooks.dispatcher import EndpointPipe
from sinks.webhooks.outcomes import Job
from sinks.webhooks.rebalance import RebalanceListener
from sinks.webhooks.warmup import WarmupConfig

TP = TopicPartition("cw.alerts", 3)

DEAD_LETTERS = "cw.webhook-dead-letter"


class Rebalanced:
    """One endpoint's pipe owning `TP`, and the listener the consumer calls."""

    def __init__(self, name: str) -> None:
        self.pipe: EndpointPipe = offline_pipe(name)
        self.pipe.warmup.config = WarmupConfig(records=0)  # what it reads back: by hand
        self.producer = LogProducer()
        self.pipe.producer = self.producer  # type: ignore[assignment]
        self.consumer = FakeConsumer([TP])
        self.listener = RebalanceListener(self.pipe, self.consumer)

    async def read(self, alerts: list[Alert], first: int) -> None:
        """The consumer hands `alerts` as the records of `TP` from offset `first`."""
        values = [a.model_dump_json().encode() for a in alerts]
        await self.pipe.handle(TP, records_of(TP, values, first))

    async def assign(self, tps: set[TopicPartition]) -> None:
        """The rebalance ends with `tps` assigned, and their commit's done offsets read
        (done.py: until then they stay paused)."""
        await self.listener.on_partitions_assigned(tps)
        if self.pipe.warmup._task is not None:
            await asyncio.wait_for(self.pipe.warmup._task, 5)

    async def rebalance(self) -> None:
        """Eager: `TP` is revoked, then assigned to this endpoint again."""
        await self.listener.on_partitions_revoked({TP})
        await self.assign({TP})

    async def across_a_rebalance(self, alert: Alert) -> tuple[Job, Job]:
        """`alert` read at offset 0 and taken by a worker (its delivery still being tried),
        an eager rebalance, and the record read again from the committed position:
        (the job read before, the job read after)."""
        await self.assign({TP})
        await self.read([alert], first=0)
        old = self.take()
        await self.rebalance()
        await self.read([alert], first=0)
        return old, self.take()

    def take(self) -> Job:
        """A worker takes the next job from the queue."""
        return self.pipe.queue.get_nowait()

    async def settle(self, job: Job, *, delivered: bool) -> None:
        async def attempt(_http: Any, _job: Job) -> tuple[dict[str, Any], DeliveryResult]:
            return {}, DeliveryResult(delivered=delivered, attempts=1)

        self.pipe._deliver = attempt  # type: ignore[method-assign]
        await self.pipe._settle(None, job)  # type: ignore[arg-type]  # no HTTP here


def test_a_delivery_read_before_a_rebalance_does_not_release_the_offset_read_again() -> None:
    side = Rebalanced("rebalance-offsets")
    alert = make_alert(1)

    async def run() -> None:
        old, new = await side.across_a_rebalance(alert)
        assert side.consumer.commits == []  # nothing passed the pending record
        assert (new.offset, new.msg_id) == (old.offset, old.msg_id)
        assert side.pipe.tracker.committable() == {}  # pending again, before `old` ends

        await side.settle(old, delivered=True)
        # the re-read's delivery is still pending: a commit now, then a crash, lost it
        assert side.pipe.tracker.committable() == {}
        assert not side.pipe.tracker.idle()
        await side.settle(new, delivered=True)
        assert side.pipe.tracker.committable() == {TP: (1, "")}
        assert side.pipe.stats.delivered == 2  # both outcomes published all the same

    asyncio.run(run())


def test_a_give_up_read_before_a_rebalance_does_not_forget_the_message_read_again() -> None:
    """The old delivery gives up after the re-read's was delivered: the receiver has the
    message, so the engine's next re-announcement of it is a repeat, not a second post."""
    side = Rebalanced("rebalance-give-up")
    alert = make_alert(1)

    async def run() -> None:
        old, new = await side.across_a_rebalance(alert)
        await side.settle(new, delivered=True)

        await side.settle(old, delivered=False)
        assert side.producer.sent.count(DEAD_LETTERS) == 1  # still dead-lettered: a fact
        await side.read([alert], first=1)  # re-announced after a worker restart
        assert side.pipe.queue.empty()
        assert side.pipe.stats.repeats == 1
        assert side.pipe.tracker.committable() == {TP: (2, "")}

    asyncio.run(run())


def test_a_give_up_of_the_current_assignment_still_forgets_its_message() -> None:
    """The other way round: the re-read's delivery gave up, so the receiver never got
    the message (the old one's success came before the rebalance for all the memory
    knows): the next re-announcement is delivered, as a new message."""
    side = Rebalanced("rebalance-current-give-up")
    alert = make_alert(1)

    async def run() -> None:
        old, new = await side.across_a_rebalance(alert)
        await side.settle(new, delivered=False)  # the re-read's own give-up
        await side.settle(old, delivered=True)
        await side.read([alert], first=1)
        again = side.take()
        assert again.offset == 1
        assert again.msg_id != old.msg_id
        assert side.pipe.queue.empty()

    asyncio.run(run())


def test_jobs_still_queued_when_their_partition_is_revoked_are_not_delivered() -> None:
    """The revocation's commit stays below them, so the partition's next owner (here the
    same endpoint) reads them again: each record is delivered once, by its re-read."""
    side = Rebalanced("rebalance-queued")
    alerts = [make_alert(n) for n in range(3)]
    attempted: list[tuple[int, bool]] = []

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        attempted.append((job.offset, side.pipe.current(job)))
        return {}, DeliveryResult(delivered=True, attempts=1)

    async def run() -> None:
        await side.assign({TP})
        await side.read(alerts, first=0)
        await side.settle(side.take(), delivered=True)  # offset 0 is done; 1 and 2 queued
        await side.rebalance()
        assert side.consumer.commits == [{TP: (1, "")}]
        await side.read(alerts[1:], first=1)  # from the committed position
        assert side.pipe.queue.qsize() == 4  # the two revoked, the two read again

        last = asyncio.Event()
        finish = side.pipe._finish

        async def finished(job: Job, *args: Any) -> None:
            await finish(job, *args)
            if job.offset == 2 and side.pipe.current(job):
                last.set()

        side.pipe._deliver = attempt  # type: ignore[method-assign]
        side.pipe._finish = finished  # type: ignore[method-assign]
        worker = asyncio.create_task(side.pipe._work(None))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(last.wait(), 5)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        assert not side.pipe.busy
        assert side.pipe.tracker.committable() == {TP: (3, "")}

    asyncio.run(run())
    assert attempted == [(1, True), (2, True)]  # never the revoked ones


async def _deliver_queued(pipe: EndpointPipe) -> None:
    """A worker delivers (successfully) whatever is queued, then is stopped."""

    async def attempt(_http: Any, _job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        return {}, DeliveryResult(delivered=True, attempts=1)

    drained = asyncio.Event()
    take = pipe.queue.get

    async def next_job() -> Job:  # the worker is back for more: all before it is settled
        if pipe.queue.empty():
            drained.set()
        return await take()

    pipe._deliver = attempt  # type: ignore[method-assign]
    pipe.queue.get = next_job  # type: ignore[method-assign]
    worker = asyncio.create_task(pipe._work(None))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(drained.wait(), 5)
        assert not pipe.busy
    finally:
        pipe.queue.get = take  # type: ignore[method-assign]
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


def test_records_handed_on_between_revocation_and_assignment_are_read_again() -> None:
    """aiokafka runs the revoke listener when a rebalance begins but lists the partitions
    as assigned until the group's SyncGroup, and `getmany` may have returned records just
    before: `consume` hands them on after the listener. Queued, they made a fresh tracker
    entry whose commit (the group still accepts it then) passed the queued jobs the
    revocation dropped: never delivered by anyone."""
    side = Rebalanced("rebalance-window")
    alerts = [make_alert(n) for n in range(11)]

    async def run() -> None:
        await side.assign({TP})
        await side.read(alerts[:8], first=0)
        for _ in range(5):
            await side.settle(side.take(), delivered=True)  # 0-4 delivered
        await side.pipe.commit(side.consumer)
        in_flight = side.take()  # 5: being retried; 6 and 7 queued
        assert side.consumer.commits == [{TP: (5, "")}]
        await side.listener.on_partitions_revoked({TP})  # nothing new to commit
        await side.read(alerts[8:], first=8)  # fetched before the rebalance began
        side.pipe._last_commit = 0.0  # the commit interval has passed
        await side.pipe.after_batch(side.consumer)
        assert side.consumer.commits == [{TP: (5, "")}]  # nothing past 5, 6 and 7
        await side.assign({TP})  # handed back
        await side.settle(in_flight, delivered=True)
        await side.read(alerts[5:], first=5)  # read again from the committed position
        await _deliver_queued(side.pipe)
        await side.pipe.commit(side.consumer)
        assert side.consumer.commits[-1] == {TP: (11, "")}
        assert side.pipe.idle()

    asyncio.run(run())
    assert side.pipe.stats.delivered == 12  # 0-10 once, 5 (in flight at the rebalance) twice


def test_a_partition_back_after_another_owner_commits_nothing_before_it_is_read() -> None:
    """What an endpoint read of a partition before it moved away is not offered for commit
    when it comes back: the other owner moved the position on meanwhile."""
    side = Rebalanced("rebalance-moved")
    alerts = [make_alert(n) for n in range(8)]

    async def run() -> None:
        await side.assign({TP})
        await side.read(alerts[:5], first=0)
        await side.listener.on_partitions_revoked({TP})
        await side.read(alerts[5:], first=5)  # handed on in the rebalance's window
        await side.assign(set())  # TP went to another notifier
        await _deliver_queued(side.pipe)
        assert side.pipe.stats.delivered == 0  # all of it the other owner's to deliver
        await side.listener.on_partitions_revoked(set())
        await side.assign({TP})  # back, at the other's position
        await side.pipe.commit(side.consumer)
        assert side.consumer.commits == []

    asyncio.run(run())


def test_a_drain_does_not_end_while_a_rebalance_runs() -> None:
    """Until the new assignment the consumer still reports the old one's positions, past
    records the revocation dropped: `notify --drain` took that for the end and exited with
    them neither delivered nor committed."""
    side = Rebalanced("rebalance-drain")

    async def run() -> None:
        await side.assign({TP})
        assert side.pipe.idle()
        await side.listener.on_partitions_revoked({TP})
        await side.read([make_alert(1)], first=0)  # handed on in the window: dropped
        assert not side.pipe.idle()
        await side.assign(set())  # it went to another notifier
        assert side.pipe.idle()

    asyncio.run(run())


def test_records_fetched_before_a_rebalance_that_hands_the_partition_back_are_not_queued() -> None:
    """`getmany` returned, then the revocation and the new assignment both ran before the
    records were handed on (aiokafka makes this most unlikely: two group round trips in
    a loop turn or two): they belong to the old assignment. The new one paused the
    partition for its read-back, which must come first; the records are read again."""
    side = Rebalanced("rebalance-stale-fetch")
    side.pipe.warmup.config = WarmupConfig(records=10)
    read_back = asyncio.Event()

    async def hold(*_args: Any) -> None:  # the read-back, held until the test lets it end
        await read_back.wait()

    side.pipe.warmup._run = hold  # type: ignore[method-assign]

    async def run() -> None:
        await side.listener.on_partitions_revoked(set())
        await side.listener.on_partitions_assigned({TP})  # its read-back held (`hold`)
        assert TP in side.consumer.paused()
        await side.read([make_alert(1)], first=0)  # the old assignment's fetch
        assert side.pipe.queue.empty()
        assert side.pipe.tracker.committable() == {}
        read_back.set()
        await side.pipe.warmup.stop()

    asyncio.run(run())


def test_no_queued_delivery_starts_while_the_revocation_commits() -> None:
    """The listener awaits its commit before it forgets the partitions: a worker freed
    meanwhile took the next queued job, still current, and posted it, although the
    partition's next owner reads it again (a second post)."""
    side = Rebalanced("rebalance-revoking")
    committing, committed = asyncio.Event(), asyncio.Event()
    posted: list[int] = []
    started, answered = asyncio.Event(), asyncio.Event()

    async def slow_commit(offsets: dict[TopicPartition, int]) -> None:
        side.consumer.commits.append(dict(offsets))
        committing.set()
        await committed.wait()

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        posted.append(job.offset)
        started.set()
        await answered.wait()
        return {}, DeliveryResult(delivered=True, attempts=1)

    side.consumer.commit = slow_commit  # type: ignore[method-assign]

    async def run() -> None:
        await side.assign({TP})
        await side.read([make_alert(n) for n in range(3)], first=0)
        await side.settle(side.take(), delivered=True)  # 0 done: the revocation commits 1
        side.pipe._deliver = attempt  # type: ignore[method-assign]
        worker = asyncio.create_task(side.pipe._work(None))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(started.wait(), 5)  # 1 is being posted
            revoking = asyncio.create_task(side.listener.on_partitions_revoked({TP}))
            await asyncio.wait_for(committing.wait(), 5)
            answered.set()  # 1 (in flight) ends while the commit is under way
            done, _ = await asyncio.wait({revoking}, timeout=0.2)
            assert not done
            committed.set()
            await asyncio.wait_for(revoking, 5)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    asyncio.run(run())
    assert posted == [1]  # 2 waited in the queue and was not started
