"""An endpoint's rebalances: which of its jobs are still current, and the listener.

A rebalance does not mix assignments: every job carries its partition's
assignment generation, bumped at each assignment and revocation. A job of a
revoked partition still queued is dropped undelivered (the revocation's commit
stayed below it and its metadata lists only finished records, so whoever owns
the partition next reads it again and delivers it); an attempt under way
finishes and its outcome is published (a delivery waiting to retry is left
without one, `EndpointPipe._before_retry`), but it leaves the offsets and the
memory of messages alone: they belong to the partition's new assignment, which
reads that record again (eager rebalancing hands a partition a notifier keeps
back to it, so this is every rebalance).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from sinks.webhooks.outcomes import Job
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.warmup import Warmup

log = structlog.stdlib.get_logger(__name__)


class Assignments:
    """Each partition's current assignment (`Job.generation`), and the partitions a
    rebalance under way revokes."""

    def __init__(self) -> None:
        self._generations: dict[TopicPartition, int] = {}
        """Per partition, its current assignment; bumped by `assigned` and `renew`."""
        self.revoked: set[TopicPartition] = set()
        """Revoked and not assigned again yet: anything still handed on of them is stale."""
        self.revocation = asyncio.Event()
        """Set when a rebalance begins (then replaced): it ends the retry waits."""

    def generation(self, tp: TopicPartition) -> int:
        """The current assignment of `tp`, for the jobs read now."""
        return self._generations.get(tp, 0)

    def current(self, job: Job) -> bool:
        """Whether `job` was read in its partition's current assignment.

        Only such a job may settle its offset and its message: after a revocation,
        an older job's outcome would release the same offset pending again in the
        new assignment (and the commit would pass a record still being delivered),
        or forget the message its re-read remembers (and a repeat would be posted
        again).
        """
        return job.generation == self.generation(job.tp)

    def stale(self, job: Job) -> bool:
        """Whether `job` is of an earlier assignment, or of a partition being revoked."""
        return not self.current(job) or job.tp in self.revoked

    def assigned(self, tps: Collection[TopicPartition]) -> None:
        """A new assignment of `tps`: jobs read before it are no longer current."""
        self.revoked.clear()  # the rebalance ended: what is not assigned here is another's
        for tp in tps:
            self.renew(tp)

    def revoking(self, tps: Collection[TopicPartition]) -> None:
        """A rebalance began: `tps` are revoked until assigned again, and the retry
        waits end (`revocation`)."""
        self.revoked.update(tps)
        self.revocation.set()  # the retry waits of these partitions end now
        self.revocation = asyncio.Event()

    def renew(self, tp: TopicPartition) -> None:
        """The jobs of `tp` read so far are no longer current."""
        self._generations[tp] = self.generation(tp) + 1


class Rebalanced(Protocol):
    """What the listener needs of an endpoint's pipeline (`EndpointPipe`)."""

    endpoint: Endpoint
    in_flight: int
    warmup: Warmup

    def revoking(self, tps: Collection[TopicPartition]) -> None: ...

    def assigned(self, tps: Collection[TopicPartition]) -> None: ...

    def forget(self, tp: TopicPartition) -> None: ...

    async def commit(self, consumer: AIOKafkaConsumer, *, revoking: bool = False) -> None: ...


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit and forget what is revoked; warm up what is assigned (warmup.py)."""

    def __init__(self, pipe: Rebalanced, consumer: AIOKafkaConsumer) -> None:
        self.pipe = pipe
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.pipe.revoking(revoked)  # before any await: no queued job of them starts now
        log.info(
            "webhook_partitions_revoked",
            endpoint=self.pipe.endpoint.name,
            partitions=sorted(tp.partition for tp in revoked),
            in_flight=self.pipe.in_flight,
        )
        await self.pipe.warmup.stop()
        with contextlib.suppress(KafkaError):
            await self.pipe.commit(self.consumer, revoking=True)
        for tp in revoked:
            self.pipe.forget(tp)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.pipe.assigned(assigned)
        log.info(
            "webhook_partitions_assigned",
            endpoint=self.pipe.endpoint.name,
            partitions=sorted(tp.partition for tp in assigned),
        )
        self.pipe.warmup.start(self.consumer, assigned)  # pauses before any await
