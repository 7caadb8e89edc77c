"""One endpoint's pipeline (`EndpointPipe`): its consumer, queue, workers and commits.

What it guarantees is the notifier's (notifier.py, which runs one per endpoint):
it reads `alerts` in the endpoint's own consumer group, fetches no more than its
queue holds, delivers each record with `concurrency` workers (delivery.py),
records every outcome before the record's offset may be committed (publish.py,
outcomes.py), commits what is finished (offsets.py, done.py, commits.py),
remembers the messages it delivered (payloads.py, warmup.py) and follows its
partitions through rebalances (rebalance.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from standardwebhooks import Webhook

from schemas.alerts import Alert, AlertStatus
from schemas.kafka_security import Kafka
from schemas.log_throttle import LogThrottle
from sinks.backoff import Backoff
from sinks.consumer import (
    KafkaWaits,
    consume,
    new_consumer,
    start_consumer,
    stop_consumer,
)
from sinks.webhooks import metrics
from sinks.webhooks.commits import Committer
from sinks.webhooks.delivery import (
    AttemptResult,
    DeliveryResult,
    EndpointHealth,
    RetryPolicy,
    WorkerClients,
    close_client,
    deliver,
    error_text,
    error_trace,
    request_secrets,
)
from sinks.webhooks.done import LeftOutLog
from sinks.webhooks.held import HeldMessage, HeldRead, ReleaseWatch, held_key, read_held
from sinks.webhooks.invalid import InvalidAlertLog, NotAnAlert
from sinks.webhooks.log_producer import LogProducer
from sinks.webhooks.offsets import OffsetTracker
from sinks.webhooks.outcomes import (
    Job,
    dead_letter,
    delivery_log,
    processing_error,
    silenced_result,
)
from sinks.webhooks.payloads import MessageIds, Seen, render
from sinks.webhooks.pending import PendingAges
from sinks.webhooks.publish import publish
from sinks.webhooks.rebalance import Assignments, RebalanceListener
from sinks.webhooks.silence_follower import SilenceFollower
from sinks.webhooks.silences import Silence
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import TargetPolicy
from sinks.webhooks.warmup import Warmup, WarmupConfig

log = structlog.stdlib.get_logger(__name__)

COMMIT_INTERVAL_S = 0.5
RELEASE_CHECK_S = 1.0
"""How often an endpoint looks for held alerts whose silence has ended (`_release_held`)."""
RELEASE_SLICE_S = 0.05
"""The longest a release check walks held alerts before it lets the event loop run the
deliveries: a walk that must look every held alert up (100,000 held x 10,000 silences)
takes far longer than a second, and must not stop everything else meanwhile."""
MAX_HELD = 100_000
"""Held messages an endpoint keeps in memory (`EndpointPipe.held`; MessageIds' order).
A silenced message past it is still written to the held topic, counted and logged, not
kept: read back from the topic once the endpoint holds fewer (`_restore_held`). A
read-back keeps no more than it in memory either (`read_held`'s `limit`)."""
HELD_READ_BACKOFF = (0.5, 30.0)
"""A failed read-back of the held topic is tried again after these (initial, max) s."""
STOP_GRACE_S = 2.0
"""On a stop, how long past the endpoint's attempt deadline (`timeout_s`) the attempts
under way may take to end and have their outcomes recorded."""
DRAIN_RESTORE_WAIT_S = 30.0
"""The most a drain's end waits for its read-backs of held messages (`_restores_done`)."""


class _Abandoned(Exception):
    """A delivery left between two attempts because the notifier stops or its partition
    was revoked: no outcome is recorded and its record is not committed, so the next run
    or the partition's next assignment delivers it."""


class _Silenced(Exception):
    """A delivery left between two attempts because a silence in force covers it now (a
    silence added while it was retrying): recorded `silenced`, with the attempts made."""

    def __init__(self, silence: Silence) -> None:
        super().__init__(silence.silence_id)
        self.silence = silence
        self.statuses: list[int] = []
        self.began = time.monotonic()
        self.began_at = datetime.now(UTC)


class WorkerDied(RuntimeError):
    """An endpoint's delivery worker ended: the notifier stops instead of hanging."""


@dataclass
class NotifyStats:
    alerts: int = 0
    """Records read from `alerts` (each endpoint reads them all: the largest count)."""
    invalid: int = 0
    repeats: int = 0
    """Unchanged re-publishes not delivered again (per endpoint: summed)."""
    finished: int = 0
    """Records whose delivery had finished before a restart or rebalance, above the
    committed position (its metadata, done.py), not delivered again (summed)."""
    delivered: int = 0
    gave_up: int = 0
    silenced: int = 0
    """Not sent: a silence was in force (silences.py), recorded `silenced`."""
    released: int = 0
    """Held by a silence, sent once it ended (the alert still open): each also counted in
    `delivered` or `gave_up`."""
    endpoints: int = 0
    """How many endpoints `repeats`, `delivered` and `gave_up` are summed over."""
    held: dict[str, int] | None = None
    """At a drain's end: how many alerts each endpoint leaves held by a silence on the
    held topic (sent when their silence ends, by a notifier running then); None: not
    counted (no drain, or the topic could not be read: logged)."""


@dataclass(frozen=True)
class Topics:
    alerts: str
    deliveries: str
    dead_letter: str
    held: str = ""
    """The messages silences held, kept across restarts (held.py); "": kept in the process
    only (tests of other parts)."""
    held_partitions: int = 0


@dataclass(frozen=True)
class PipeConfig:
    bootstrap: Kafka
    group_id: str
    topics: Topics
    policy: RetryPolicy
    targets: TargetPolicy
    queue_size: int
    consumer_options: Mapping[str, Any]
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    silences: SilenceFollower | None = None
    """The silences every delivery consults (None: none, as in tests of other parts)."""
    endpoints: tuple[str, ...] = ()
    """Every endpoint of the notifier's subscriptions file, in its order: the first one's
    read-backs of the held topic count the messages of endpoints not among them
    (`_report_unknown`)."""


class EndpointPipe:
    """One endpoint: its consumer group, queue, HTTP client, workers and offsets."""

    def __init__(self, endpoint: Endpoint, config: PipeConfig, producer: LogProducer) -> None:
        self.endpoint = endpoint
        self.config = config
        self.policy = config.policy
        self.producer = producer
        self.group_id = f"{config.group_id}.{endpoint.name}"
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=config.queue_size)
        self.signer = Webhook(endpoint.signing_secret()) if endpoint.signed else None
        self.routing_key = endpoint.pagerduty_routing_key()
        self.secrets = request_secrets(endpoint.url.get_secret_value(), self.routing_key)
        """What no error of a delivery shows (`deliver` hides the same)."""
        self.health = EndpointHealth(endpoint.name, endpoint.host)
        self.tracker = OffsetTracker()
        self.ids = MessageIds()
        self.warmup = Warmup(
            endpoint.name,
            config.warmup,
            bootstrap=config.bootstrap,
            options=config.consumer_options,
            remember=self._remember,
            forget=self.forget,
            restore=self.tracker.restore,
        )
        self.invalid = InvalidAlertLog(endpoint.name)
        self.pending = PendingAges()
        topics = config.topics
        log_topics = (topics.deliveries, topics.dead_letter)
        metrics.start_series(
            endpoint.name, log_topics, lambda: self.pending.oldest_s(), lambda: len(self.held)
        )
        self.stats = NotifyStats(endpoints=1)
        self.in_flight = 0
        self._none_in_flight = asyncio.Event()
        self._none_in_flight.set()
        self.stopping = asyncio.Event()
        """Set when the endpoint stops: no delivery starts and none retries any more."""
        self._last_commit = 0.0
        self.assignments = Assignments()
        self.left_out = LeftOutLog(endpoint.name)
        self.committer = Committer(endpoint.name, self.tracker, self.left_out)
        self.held: dict[str, Job] = {}
        """Alert id -> its latest message, open, recorded `silenced` (in this run, or
        read back from the held topic at its partition's assignment), of a partition of
        the current assignment: sent when no silence covers it any more. At most
        `MAX_HELD` (`_hold`)."""
        self._restoring: set[asyncio.Task[None]] = set()
        self._over_bound = False
        """A silenced message was not kept (`MAX_HELD`): read the held topic back once
        the endpoint holds fewer."""
        self._held_throttle = LogThrottle()
        self._assigned: set[TopicPartition] = set()
        """The consumer's whole assignment, as its last rebalance gave it."""
        self._released: set[str] = set()
        """The `webhook-id`s released and not yet dropped (queued, being sent): a
        read-back past the bound does not hold them again."""
        self._tombstoning: dict[str, int] = {}
        """Alert id -> the `alerts` offset of its held message whose tombstone is being
        written (`_drop_held`)."""
        self._dropped_during: list[dict[str, int]] = []
        """Per read-back under way (`_restore_held`): alert id -> the highest `alerts`
        offset of its held messages dropped (tombstoned) since it began or being
        tombstoned then. Its read may have met the topic before those tombstones: a
        record at or before that offset is not held again (it was sent, or superseded)."""
        self.held_checks = 0
        """Looks for held messages whose silences ended, done (`_release_held`)."""
        self.release_watch = ReleaseWatch()
        """Which held messages the next look looks at: all only once something changed."""

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or not self.queue.empty()

    # --- deliveries ----------------------------------------------------------

    async def _deliver(
        self, http: httpx.AsyncClient, job: Job
    ) -> tuple[dict[str, Any], DeliveryResult]:
        """Build the message, then attempt it; a failure of either is the outcome
        `processing_error` (given up), never an exception out of the worker."""
        began, began_at = time.monotonic(), datetime.now(UTC)
        try:
            payload, body = render(
                job.alert,
                self.endpoint.format,
                link_template=self.endpoint.link_template,
                routing_key=self.routing_key,
            )
        except Exception as exc:
            return {}, self._processing_error(job, "building the message failed", exc, began)
        name = self.endpoint.name
        statuses: list[int] = []

        def count(result: AttemptResult) -> None:
            statuses.append(result.status)
            metrics.ATTEMPTS.labels(name, metrics.status_class(result.status)).inc()

        try:
            result = await deliver(
                http,
                self.endpoint.url.get_secret_value(),
                self.signer,
                job.msg_id,
                body,
                self.policy,
                sleep=lambda delay_s: self._before_retry(job, delay_s),
                on_attempt=count,
                health=self.health,
                hide=(self.routing_key,),  # in the body: a receiver may quote it back
            )
        except _Abandoned:
            raise
        except _Silenced as silenced:  # the attempts made, for its outcome
            silenced.statuses, silenced.began, silenced.began_at = statuses, began, began_at
            raise
        except Exception as exc:
            result = self._processing_error(job, "delivering failed", exc, began, statuses)
        return payload, result

    def _processing_error(
        self, job: Job, what: str, exc: Exception, began: float, statuses: list[int] | None = None
    ) -> DeliveryResult:
        """A delivery given up on a bug: logged with its trace, the reason kept short, the
        URL's secrets and the routing key hidden in both, as every other failure's (an
        exception's text may quote the URL: a library's error about it, or a receiver's
        bytes)."""
        log.error(
            "webhook_processing_error",
            endpoint=self.endpoint.name,
            host=self.endpoint.host,
            webhook_id=job.msg_id,
            alert_id=job.alert.alert_id,
            error=f"{what}: {error_text(exc, hide=self.secrets)}",
            exception=error_trace(exc, hide=self.secrets),
        )
        return processing_error(what, exc, began, statuses, hide=self.secrets)

    async def _settle(self, http: httpx.AsyncClient, job: Job) -> None:
        """Deliver one job and publish its outcome, whatever happens on the way.

        Should recording the outcome fail on something other than Kafka (which
        `publish` rides out), it is recorded once more as given up, with what
        happened in the reason and without a payload (a deterministic failure
        would otherwise kill the worker again after every restart); if even
        that fails the worker dies and the notifier stops (`WorkerDied`), and
        the record is delivered again after a restart.
        """
        try:
            silence = await self._silence(job)
            if silence is not None:
                await self._finish_silenced(job, silence)
                return
            payload, result = await self._deliver(http, job)
        except _Abandoned:
            return  # the notifier stops: its record stays pending, so it is not committed
        except _Silenced as silenced:  # silenced between two attempts
            await self._finish_silenced(job, silenced.silence, silenced)
            return
        # the receiver never got it (not: its outcome unrecorded); a job of an earlier
        # assignment would forget the entry the partition's re-read put there
        if not result.delivered and self.current(job):
            self.ids.given_up(job.alert.alert_id, job.msg_id)
        try:
            await self._finish(job, result, payload)
        except Exception as exc:
            ended = "delivered" if result.delivered else f"gave up: {result.last_error}"
            what = f"recording the outcome ({ended}) failed"
            began = time.monotonic() - result.latency_ms / 1000
            fallback = self._processing_error(job, what, exc, began, result.status_codes)
            await self._finish(job, fallback, {})

    async def _silence(self, job: Job, since: float | None = None) -> Silence | None:
        """The silence in force now (wall clock) covering the job, once the silences read
        are at least as new as `since` (monotonic; default when the job was read, before
        its first attempt; a retry's is the retry's own moment, silence_follower.py):
        while they cannot be read, this waits, ended by a stop or the partition's
        revocation (`_Abandoned`)."""
        follower = self.config.silences
        if follower is None:
            return None
        since = job.read_at if since is None else since
        while True:
            revocation = self.assignments.revocation  # set (and replaced) at a rebalance
            cancel = [self.stopping, revocation]
            if await follower.current_since(since, cancel=cancel):
                break
            if self.stopping.is_set() or self.assignments.stale(job):
                raise _Abandoned  # not recorded nor committed: read and delivered again
        return follower.book.silencing(job.alert, self.endpoint.name, datetime.now(UTC))

    async def _finish_silenced(
        self, job: Job, silence: Silence, retried: _Silenced | None = None
    ) -> None:
        """Record a delivery not sent as `silenced` (the delivery log only: nothing was
        given up, so no dead letter, and `deliveries resend` has nothing to re-send).
        `retried`: silenced before a retry, the failed attempts before it recorded too."""
        endpoint = self.endpoint
        result = silenced_result(silence.silence_id, silence.reason)
        if retried is not None:
            result.attempts = len(retried.statuses)
            result.status_codes = list(retried.statuses)
            result.first_attempt_at = retried.began_at
            result.latency_ms = (time.monotonic() - retried.began) * 1000
        entry = delivery_log(job, endpoint, result, silenced=True)
        topic = self.config.topics.deliveries
        await publish(self.producer, topic, job.msg_id, entry.model_dump_json().encode())
        self.stats.silenced += 1
        metrics.SILENCED.labels(endpoint.name).inc()
        log.info(
            "webhook_silenced",
            endpoint=endpoint.name,
            webhook_id=job.msg_id,
            alert_id=job.alert.alert_id,
            silence_id=silence.silence_id,
            attempts=result.attempts,
        )
        alert_id = job.alert.alert_id
        self._released.discard(job.msg_id)  # released, then held again: not being sent
        open_latest = (
            job.alert.status is AlertStatus.OPEN and self.ids.latest(alert_id) == job.msg_id
        )
        if self.current(job) and open_latest:  # held until no silence covers it
            self._hold(dataclasses.replace(job, released=False), by=silence)
            await self._keep_held(job)
        elif job.released:
            await self._drop_held(job)
        if self.current(job) and not job.released:
            self.tracker.done(job.tp, job.offset)

    async def _finish(self, job: Job, result: DeliveryResult, payload: dict[str, Any]) -> None:
        endpoint = self.endpoint
        msg_id = job.msg_id
        topics = self.config.topics
        entry = delivery_log(job, endpoint, result)
        await publish(self.producer, topics.deliveries, msg_id, entry.model_dump_json().encode())
        if not result.delivered:
            letter = dead_letter(job, endpoint, result, payload)
            value = letter.model_dump_json().encode()
            await publish(self.producer, topics.dead_letter, msg_id, value)
            self.stats.gave_up += 1
            log.warning(
                "webhook_gave_up",
                endpoint=endpoint.name,
                host=endpoint.host,
                webhook_id=msg_id,
                attempts=result.attempts,
                error=result.last_error,
            )
        else:
            self.stats.delivered += 1
        metrics.DELIVERIES.labels(endpoint.name, entry.outcome).inc()
        metrics.LATENCY.labels(endpoint.name).observe(result.latency_ms / 1000)
        if job.released:  # its offset was settled when it was silenced
            await self._drop_held(job)
            self.stats.released += 1
            metrics.RELEASED.labels(endpoint.name).inc()
        elif self.current(job):  # else the same offset may be pending in the new assignment
            self.tracker.done(job.tp, job.offset)

    async def _before_retry(self, job: Job, delay_s: float) -> None:
        """The wait before a retry, cut short by a stop (`_Abandoned`): a stopping
        notifier ends the attempts under way, not the retries after them. A job whose
        partition was revoked meanwhile is left too: the partition's next assignment
        (here or elsewhere) reads the record again and delivers it, while retrying it
        here, up to the retry horizon, only took a worker and posted it twice.

        Then the silences are checked again, as before the first attempt but as new as
        this retry (a round of the follower begun after the wait: one ListOffsets
        request, shared by the retries waiting with it): a silence added while the
        delivery was retrying (a unit taken into maintenance) ends it (`_Silenced`)."""
        await self._retry_wait(job, delay_s)
        silence = await self._silence(job, since=time.monotonic())
        if silence is not None:
            raise _Silenced(silence)

    async def _retry_wait(self, job: Job, delay_s: float) -> None:
        until = time.monotonic() + delay_s
        while True:
            revocation = self.assignments.revocation  # set (and replaced) at a rebalance
            waits = [asyncio.ensure_future(e.wait()) for e in (self.stopping, revocation)]
            try:
                await asyncio.wait(
                    waits,
                    timeout=max(0.0, until - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for wait in waits:
                    wait.cancel()
            if self.stopping.is_set() or self.assignments.stale(job):
                raise _Abandoned  # (a retry wait lasts up to minutes: a Retry-After)
            if time.monotonic() >= until:
                return  # else another partition's revocation: wait on

    async def _keep_held(self, job: Job) -> None:
        topic = self.config.topics.held
        if not topic:
            return
        held = HeldMessage(
            endpoint=self.endpoint.name,
            webhook_id=job.msg_id,
            partition=job.tp.partition,
            offset=job.offset,
            alert=job.alert,
        )
        key = held_key(self.endpoint.name, job.alert.alert_id)
        await publish(self.producer, topic, key, held.model_dump_json().encode())

    async def _drop_held(self, job: Job) -> None:
        """A tombstone: sent (its outcome recorded), or superseded by a later message.

        A read-back under way (or starting before the tombstone is written) may still
        meet the message's record without it: `_dropped_during` tells it not to hold the
        message again, which would send it a second time."""
        self._released.discard(job.msg_id)
        alert_id = job.alert.alert_id
        for dropped in self._dropped_during:
            dropped[alert_id] = max(job.offset, dropped.get(alert_id, -1))
        topic = self.config.topics.held
        if not topic:
            return
        tombstoning = self._tombstoning
        tombstoning[alert_id] = max(job.offset, tombstoning.get(alert_id, -1))
        try:
            await publish(self.producer, topic, held_key(self.endpoint.name, alert_id), None)
        finally:
            if tombstoning.get(alert_id) == job.offset:
                del tombstoning[alert_id]

    def _restore_held_of(self, tps: Collection[TopicPartition]) -> None:
        """Read back what is held of the newly assigned `tps` (a task: the rebalance
        listener does not wait for it)."""
        if not self.config.topics.held or self.config.silences is None or not tps:
            return
        generations = {tp: self.assignments.generation(tp) for tp in tps}
        task = asyncio.create_task(self._restore_held(generations))
        self._restoring.add(task)
        task.add_done_callback(self._restoring.discard)

    async def _restore_held(self, generations: dict[TopicPartition, int]) -> None:
        """Read back what is held of the partitions of `generations`; a failed read is
        tried again (`HELD_READ_BACKOFF`) while they stay assigned and the notifier runs,
        logged once per throttle window."""
        dropped = dict(self._tombstoning)  # (their tombstones may land after the read)
        self._dropped_during.append(dropped)
        try:
            await self._read_back(generations, dropped)
        finally:
            self._dropped_during.remove(dropped)

    async def _read_back(
        self, generations: dict[TopicPartition, int], dropped: dict[str, int]
    ) -> None:
        """`_restore_held`'s read and what it holds; `dropped`: the held messages
        tombstoned meanwhile (`_dropped_during`), not held again."""
        backoff = Backoff(*HELD_READ_BACKOFF)
        while True:
            standing = {tp for tp, g in generations.items() if not self._gone(tp, g)}
            if not standing or self.stopping.is_set():
                return  # the next assignment (here or elsewhere) reads them back
            partitions = {tp.partition for tp in standing}
            try:
                read = await read_held(
                    self.config.bootstrap,
                    self.config.topics.held,
                    self.config.topics.held_partitions,
                    self.endpoint.name,
                    partitions,
                    call_s=self.config.warmup.timeout_s,
                    limit=MAX_HELD,
                    known=self.config.endpoints if self._counts_unknown else None,
                )
                break
            except Exception as exc:  # Kafka's errors, a deadline: tried again
                delay_s = backoff.next()
                held_back = self._held_throttle.admit("webhook_held_unreadable")
                if held_back is not None:
                    log.warning(
                        "webhook_held_unreadable",
                        endpoint=self.endpoint.name,
                        partitions=sorted(partitions),
                        error=error_text(exc, hide=self.secrets),
                        attempts=backoff.attempts,
                        retry_in_s=round(delay_s, 3),
                        held_back=held_back,
                        consequence="read again while these partitions stay assigned; "
                        "the alerts held in them are sent when their silence ends once read",
                    )
                await self._wait_or_revoked(delay_s)
        if read.more:  # left on the topic by the read's bound: read again once fewer
            self._over_bound = True
        self._report_unknown(read)
        self._report_invalid(read)
        alerts = self.config.topics.alerts
        for alert_id, held in read.found.items():
            tp = TopicPartition(alerts, held.partition)
            if self.assignments.generation(tp) != generations.get(tp):
                continue  # revoked (or assigned again) meanwhile: that read decides
            if held.webhook_id in self._released:
                continue  # being sent: its tombstone follows
            if held.offset <= dropped.get(alert_id, -1):
                continue  # sent or superseded during the read: its tombstone came after
            known = self.held.get(alert_id)
            if known is not None and known.offset >= held.offset:
                continue
            job = Job(held.alert, held.webhook_id, tp, held.offset, generations[tp])
            self._hold(job, counted=False)

    @property
    def _counts_unknown(self) -> bool:
        """One endpoint of a notifier (its file's first) counts the others' messages."""
        return self.config.endpoints[:1] == (self.endpoint.name,)

    def _report_unknown(self, read: HeldRead) -> None:
        """A warning per endpoint not in the subscriptions file with messages held on the
        topic (once per throttle window each): never sent by this notifier, nor dropped
        (in a rolling change another notifier may have the endpoint already); an operator
        clears them (`chainwatch silences drop-held`)."""
        for name, count in sorted(read.unknown.items()):
            held_back = self._held_throttle.admit(("webhook_held_unknown_endpoint", name))
            if held_back is None:
                continue
            log.warning(
                "webhook_held_unknown_endpoint",
                endpoint=name,
                held=count,
                at_least=name in read.unknown_more,
                read_by=self.endpoint.name,
                held_back=held_back,
                consequence="kept on the held topic, sent by no notifier whose subscriptions "
                "file lacks this endpoint; if it was removed for good: chainwatch silences "
                f"drop-held {name}",
            )

    def _report_invalid(self, read: HeldRead) -> None:
        """A warning (once per throttle window) for the endpoint's records on the held
        topic that are no message of it: not held, so not sent when their silence ends.
        They were skipped unsaid, and one of another alert held under the key sent again
        after every restart (`held.held_problem`)."""
        if not read.invalid:
            return
        held_back = self._held_throttle.admit("webhook_held_invalid")
        if held_back is None:
            return
        log.warning(
            "webhook_held_invalid",
            endpoint=self.endpoint.name,
            records=read.invalid,
            first=read.invalid_reason,
            held_back=held_back,
            consequence="not held, so not sent when its silence ends; the alert's next "
            "message is delivered as usual",
        )

    def _gone(self, tp: TopicPartition, generation: int) -> bool:
        """Whether the assignment of `tp` numbered `generation` ended (or is ending)."""
        return self.assignments.generation(tp) != generation or tp in self.assignments.revoked

    async def _wait_or_revoked(self, delay_s: float) -> None:
        """Wait `delay_s`, cut short by a stop or a rebalance."""
        waits = [
            asyncio.ensure_future(e.wait()) for e in (self.stopping, self.assignments.revocation)
        ]
        try:
            await asyncio.wait(waits, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _hold(self, job: Job, *, counted: bool = True, by: Silence | None = None) -> None:
        """Keep `job` until no silence covers it (`by`: the one covering it now, None if
        not known), unless the endpoint holds `MAX_HELD` already: then it stays on the
        held topic only (written, or read from it), counted (once: `counted`) and logged,
        and the topic is read back once the endpoint holds fewer (`_reread_over_bound`)."""
        alert_id = job.alert.alert_id
        if alert_id in self.held or len(self.held) < MAX_HELD:
            self.held[alert_id] = job
            self.release_watch.held(alert_id, by)  # its silence may end before the others'
            return
        self._over_bound = True
        if not counted:
            return
        metrics.HELD_OVER_BOUND.labels(self.endpoint.name).inc()
        held_back = self._held_throttle.admit("webhook_held_over_bound")
        if held_back is not None:
            log.warning(
                "webhook_held_over_bound",
                endpoint=self.endpoint.name,
                webhook_id=job.msg_id,
                alert_id=alert_id,
                bound=MAX_HELD,
                held_back=held_back,
                consequence="kept on the held topic only: read back, and sent when its "
                "silence ends, once the endpoint holds fewer",
            )

    def _reread_over_bound(self) -> None:
        """Once the endpoint holds fewer than `MAX_HELD` again, read back what the bound
        left on the held topic (of the partitions assigned now)."""
        if not self._over_bound or len(self.held) >= MAX_HELD or self._restoring:
            return
        self._over_bound = False
        self._restore_held_of(self._assigned - self.assignments.revoked)

    async def _release_held(self) -> None:
        """Every `RELEASE_CHECK_S`, queue the held alerts no silence covers any more (a
        silence ended: its `--until`, `expire`): delivered as any job, under the message's
        own `webhook-id`, checked against the silences again (as new as the release: a
        silence added meanwhile holds it again). One that is no longer its alert's latest
        message (a later one was read: resolved, escalated), or whose partition was
        revoked meanwhile, is dropped: its alert's later message decides.

        A check looks at every held alert only when something can have changed since it
        last did (`ReleaseWatch`: the silences, a silence holding one ended, a warm-up
        ended, a rebalance), else only at those newly held or whose alert was read again:
        with nothing changed it costs nothing per held alert."""
        follower = self.config.silences
        if follower is None:
            return
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELEASE_CHECK_S):
                    await self.stopping.wait()
            if self.stopping.is_set() or follower.problem() is not None:
                continue
            try:
                await self._release_ended(follower)
                self._reread_over_bound()
                self.held_checks += 1
            except Exception as exc:  # a bug of ours: logged, the next check tries again
                log.error(
                    "webhook_release_failed",
                    endpoint=self.endpoint.name,
                    error=error_text(exc, hide=self.secrets),
                    exception=error_trace(exc, hide=self.secrets),
                )

    async def _release_ended(self, follower: SilenceFollower) -> None:
        """One check (`_release_held`): the held alerts `release_watch` says may have
        changed, each released, dropped or left held (and until when at least)."""
        now = datetime.now(UTC)
        book = follower.book
        watch = self.release_watch
        checked = False
        try:
            ids = watch.to_check(self.held, book, self.warmup.warming, now)
            slice_ends = time.monotonic() + RELEASE_SLICE_S
            for alert_id, job in [(alert_id, self.held[alert_id]) for alert_id in ids]:
                if time.monotonic() >= slice_ends:  # the deliveries run meanwhile
                    await asyncio.sleep(0)
                    slice_ends = time.monotonic() + RELEASE_SLICE_S
                    if self.stopping.is_set():
                        return
                if self.held.get(alert_id) is not job:
                    continue  # held again (by a later silenced message) while we waited
                if self.assignments.stale(job):
                    del self.held[alert_id]  # the partition's next assignment reads it back
                    watch.gone(alert_id)
                    continue
                if job.tp in self.warmup.warming:
                    continue  # its later messages not known yet (looked at once warm)
                latest = self.ids.latest(alert_id)
                if latest is not None and latest != job.msg_id:  # a later message decides
                    del self.held[alert_id]
                    watch.gone(alert_id)
                    await self._drop_held(job)
                    continue
                if watch.silencing(book, alert_id, job.alert, self.endpoint.name, now):
                    continue
                del self.held[alert_id]  # (`silencing` forgot what held it)
                log.info(
                    "webhook_silence_ended",
                    endpoint=self.endpoint.name,
                    webhook_id=job.msg_id,
                    alert_id=alert_id,
                )
                released = dataclasses.replace(job, released=True, read_at=time.monotonic())
                self._released.add(job.msg_id)
                self.pending.read(released)
                await self.queue.put(released)
                metrics.QUEUE_DEPTH.labels(self.endpoint.name).set(self.queue.qsize())
                if self.stopping.is_set():
                    return
            checked = True
        finally:
            if not checked:  # cut short (a stop, a bug of ours): the next looks at all
                watch.changed()

    async def _restores_done(self, stopped: asyncio.Task[None]) -> None:
        """A drain's end waits for the read-backs of what its partitions hold (at most
        `DRAIN_RESTORE_WAIT_S`, or until a stop): one still reading had not put its
        messages in `held` yet, so `_drop_superseded` missed a held alert that a later
        message superseded, and the drain counted it left held (seen once in CI). A
        read-back that cannot read logs why itself (`webhook_held_unreadable`)."""
        give_up = time.monotonic() + DRAIN_RESTORE_WAIT_S
        while (reading := [t for t in self._restoring if not t.done()]) and not stopped.done():
            left = give_up - time.monotonic()
            if left <= 0:
                return
            await asyncio.wait(
                [*reading, stopped], timeout=left, return_when=asyncio.FIRST_COMPLETED
            )

    async def _drop_superseded(self) -> None:
        """A drain's end: the held messages a later message of their alert superseded
        (resolved, escalated) are dropped, as the next check (`_release_ended`) would.
        The drain then counts what the held topic holds (notifier.py), and a drain
        ending before that check counted them held, to be sent, though no notifier
        would send them: one too many each."""
        for alert_id, job in list(self.held.items()):
            latest = self.ids.latest(alert_id)
            if latest is None or latest == job.msg_id or self.assignments.stale(job):
                continue
            del self.held[alert_id]
            self.release_watch.gone(alert_id)
            await self._drop_held(job)

    async def _work(self, http: httpx.AsyncClient) -> None:
        while True:
            job = await self.queue.get()
            metrics.QUEUE_DEPTH.labels(self.endpoint.name).set(self.queue.qsize())
            if self.assignments.stale(job) or self.stopping.is_set():
                # revoked (or being revoked) while queued, or the notifier stops: read
                # again from the committed position, which stays below it
                self.pending.finished(job)
                continue
            self.in_flight += 1
            self._none_in_flight.clear()
            try:
                await self._settle(http, job)
            finally:
                self.pending.finished(job)
                self.in_flight -= 1
                if not self.in_flight:
                    self._none_in_flight.set()

    async def _stopping_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stopping.set()

    async def finish_in_flight(self) -> None:
        """Stop delivering, gracefully: no delivery starts, none is retried, and the
        attempts under way end (within `timeout_s` + `STOP_GRACE_S`) with their
        outcomes recorded.

        Cancelling them instead left a message the receiver may have got (a Slack post)
        without its outcome or commit: the next run posted it again.
        """
        self.stopping.set()
        wait_s = self.policy.timeout_s + STOP_GRACE_S
        try:
            async with asyncio.timeout(wait_s):  # not wait_for: 3.11's may drop a cancel
                await self._none_in_flight.wait()
        except TimeoutError:
            log.warning(
                "webhook_stop_cut_deliveries",
                endpoint=self.endpoint.name,
                in_flight=self.in_flight,
                waited_s=wait_s,
            )

    def _seen(self, tp: TopicPartition, offset: int, value: bytes | None) -> tuple[Alert, Seen]:
        """One record shown to the memory of messages: the live path and the warm-up alike.

        Every valid alert is shown, whether the filters keep it or not, so A → B → A
        is a new message even if this endpoint's filters leave B out (a re-open, or
        an escalation back, is never taken for a repeat). Raises for a record that
        is no alert (`ValidationError`, `NotAnAlert`).
        """
        if value is None:
            raise NotAnAlert("tombstone: the record has no value")
        alert = Alert.model_validate_json(value)
        if alert.alert_id in self.held:  # a later message may decide: looked at again
            self.release_watch.touch(alert.alert_id)
        return alert, self.ids.id_for(alert, tp.partition, offset)

    def _job(self, tp: TopicPartition, offset: int, value: bytes | None) -> Job | None:
        """The delivery of one record, None if the endpoint's filters leave it out or it
        repeats the latest message of its alert (counted). Raises as `_seen`."""
        alert, seen = self._seen(tp, offset, value)
        if not self.endpoint.filters.matches(alert):
            return None
        if seen.repeat:
            self.stats.repeats += 1
            metrics.REPEATS_SKIPPED.labels(self.endpoint.name).inc()
            return None
        return Job(alert, seen.msg_id, tp, offset, self.assignments.generation(tp))

    def _remember(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        """A record read back by the warm-up: remembered, never delivered. A record the
        live path skips as invalid (it was logged when first read) is skipped here too."""
        with contextlib.suppress(Exception):
            self._seen(tp, offset, value)

    def current(self, job: Job) -> bool:
        """Whether `job` was read in its partition's current assignment (rebalance.py)."""
        return self.assignments.current(job)

    def assigned(self, tps: Collection[TopicPartition]) -> None:
        """A new assignment of `tps`: jobs read before it are no longer current, and it
        reads from the committed position, knowing nothing read before (the read-back
        rebuilds the memory of messages)."""
        self.assignments.assigned(tps)
        self.release_watch.changed()  # (what is held of an earlier assignment is dropped)
        self._assigned = set(tps)
        self._released.clear()  # (what this assignment reads back is sent at most once more)
        for tp in tps:
            self.tracker.forget(tp)
            self.ids.forget(tp.partition)
        self._restore_held_of(tps)

    def revoking(self, tps: Collection[TopicPartition]) -> None:
        """A rebalance began: until `tps` are assigned again, no queued job of them
        starts and nothing more of them is taken; the deliveries under way still count
        until the listener has committed and forgets them.

        A worker freed while the listener's commit is awaited would start a queued
        job, which the partition's next owner reads again (a second post). And
        `getmany` may have returned records just before the rebalance that `consume`
        hands on after the listener, while the consumer still lists the partitions as
        assigned (until the group's SyncGroup): queued, they would make the tracker a
        fresh entry whose next commit (still accepted by the group then) passed the
        jobs `forget` dropped.
        """
        self.assignments.revoking(tps)
        self.release_watch.changed()

    def forget(self, tp: TopicPartition) -> None:
        """The partition is read again from its committed position (or by someone else):
        its offsets and messages are dropped, and its jobs read so far are no longer
        current (those queued are not delivered: the committed position is below them)."""
        self.assignments.renew(tp)
        self.release_watch.changed()
        self.tracker.forget(tp)
        self.ids.forget(tp.partition)
        self.left_out.note(tp, 0)

    def _dispatch(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        """Queue one record's delivery; a record that cannot become one (invalid, or a
        bug of ours on it) is skipped with its reason logged (invalid.py), never raised
        into the consumer loop, which would stop every later alert for good."""
        self.stats.alerts += 1
        try:
            job = self._job(tp, offset, value)
        except Exception as exc:
            self.stats.invalid += 1
            metrics.INVALID_ALERTS.labels(self.endpoint.name).inc()
            self.invalid.skipped(tp, offset, exc)
            self.tracker.consumed(tp, offset, 0)
            return
        if job is None:  # filtered out, or a repeat: consumed with no delivery
            self.tracker.consumed(tp, offset, 0)
            return
        if self.tracker.finished_before(tp, offset):  # remembered by `_job`, like a read-back
            self.stats.finished += 1
            metrics.FINISHED_SKIPPED.labels(self.endpoint.name).inc()
            self.tracker.consumed(tp, offset, 0)
            return
        self.tracker.consumed(tp, offset, 1)
        self.queue.put_nowait(job)  # fetched no more than the queue holds
        self.pending.read(job)
        metrics.QUEUE_DEPTH.labels(self.endpoint.name).set(self.queue.qsize())

    # --- consumer ------------------------------------------------------------

    async def commit(self, consumer: AIOKafkaConsumer, *, revoking: bool = False) -> None:
        """Commit what is finished, in requests the broker takes (commits.py); `revoking`:
        the rebalance listener's, before it forgets the revoked partitions."""
        await self.committer.commit(consumer, revoking=revoking)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        drain: bool = False,
        on_error: Callable[[Exception], None] | None = None,
    ) -> NotifyStats:
        """Deliver until `stop` (or, with `drain`, until caught up and the queue is empty).

        On an error of its own (`WorkerDied`, the consumer loop's) it stops reading and
        calls `on_error` at once (the notifier stops the other endpoints then, not
        after this one's wind-down), lets the posts under way end, then raises it."""
        consumer = new_consumer(
            self.config.bootstrap, self.group_id, **self.config.consumer_options
        )
        topics = [self.config.topics.alerts]
        consumer.subscribe(topics, listener=RebalanceListener(self, consumer))
        http = WorkerClients(
            self.policy, targets=self.config.targets, workers=self.endpoint.concurrency
        )
        waits = KafkaWaits(f"Kafka at {self.config.bootstrap}", drain=drain)
        try:
            started = await start_consumer(consumer, stop, waits)
        except BaseException:  # a stalled drain, a Kafka error, our task cancelled
            await self._release(http)  # (`start_consumer` stopped the consumer)
            raise
        if not started:
            await self._release(http)
            return self.stats
        workers = [
            asyncio.create_task(self._work(client), name=f"webhook-{self.endpoint.name}-{i}")
            for i, client in enumerate(http.each)
        ]
        self._last_commit = time.monotonic()
        ending = asyncio.Event()  # `stop`, or an error of this endpoint
        relay = asyncio.create_task(forward(stop, ending))
        consuming = asyncio.create_task(
            consume(consumer, topics, self, ending, drain=drain, waits=waits)
        )
        # a stop halts deliveries at once: `consume` sees it only between fetches, and
        # may be in a commit for seconds (a coordinator gone) while workers take more
        stopped = asyncio.create_task(self._stopping_on(ending))
        releasing = asyncio.create_task(self._release_held())
        try:
            try:
                await asyncio.wait(
                    [consuming, stopped, *workers], return_when=asyncio.FIRST_COMPLETED
                )
                self._check_workers(workers)  # a dead worker would leave its queue unserved
                if not consuming.done():
                    # a stop: `consume` is cancelled rather than awaited, as it sees the
                    # stop only after its fetch or its periodic commit, which would spend
                    # a `COMMIT_TIMEOUT_S` before the final commit's (which commits what
                    # it would have); at once, so that nothing it raises is left unread
                    consuming.cancel()
                    await asyncio.wait([consuming])
                if not consuming.cancelled() and (error := consuming.exception()) is not None:
                    raise error  # also one raised just before the stop was seen
            except Exception as exc:
                # a bug of ours: nothing more is read, and the other workers' posts under
                # way still end and are recorded and committed, as on a stop, before it
                # is raised (cancelled, they were posted again by the next run)
                ending.set()
                if on_error is not None:
                    on_error(exc)
                await self.finish_in_flight()
                raise
            await self.finish_in_flight()
            if drain and not stop.is_set():
                await self._restores_done(stopped)
                await self._drop_superseded()
        finally:
            restoring = list(self._restoring)
            for task in (relay, consuming, stopped, releasing, *restoring, *workers):
                task.cancel()
            await asyncio.gather(
                relay, consuming, stopped, releasing, *restoring, *workers, return_exceptions=True
            )
            self.pending.clear()
            try:
                await self.warmup.stop()
                await self.commit(consumer)
                await stop_consumer(consumer)  # within its deadline (`STOP_S`)
            finally:  # also when a second cancel cuts the steps above
                await close_client(http, self.endpoint.name, hide=self.secrets)
        self._check_workers(workers)  # also one that failed while we were stopping
        return self.stats

    async def _release(self, http: WorkerClients) -> None:
        """What `run` started besides the consumer, when the consumer's start fails or
        stops: the warm-up its first assignment may have started (`on_partitions_assigned`
        runs inside `start`), and the HTTP client (its connection pool and its resolver's
        threads). Each within its deadline, so a long-running notifier restarting a pipe
        leaks neither a task nor a pool."""
        try:
            await self.warmup.stop()
        finally:
            await close_client(http, self.endpoint.name, hide=self.secrets)

    def _check_workers(self, workers: Sequence[asyncio.Task[None]]) -> None:
        """Raise `WorkerDied` if a worker ended on its own (only we cancel them)."""
        for task in workers:
            if not task.done() or task.cancelled():
                continue
            exc = task.exception()
            log.error(
                "webhook_worker_died",
                endpoint=self.endpoint.name,
                worker=task.get_name(),
                error=error_text(exc, hide=self.secrets) if exc else "returned",
                exception=error_trace(exc, hide=self.secrets) if exc else None,
            )
            raise WorkerDied(
                f"endpoint {self.endpoint.name}: delivery worker {task.get_name()} died "
                f"({error_text(exc, hide=self.secrets) if exc else 'returned'}): the notifier "
                "stops rather than hold "
                "its queue undelivered"
            ) from exc

    # --- the consumer loop's hooks (sinks/consumer.py) -------------------------

    def fetch_limit(self, consumer: AIOKafkaConsumer) -> int:
        """Room in the queue; pauses everything when full, and resumes what is paused
        once there is room, except the partitions still being warmed up."""
        room = self.queue.maxsize - self.queue.qsize()
        if room <= 0:
            consumer.pause(*consumer.assignment())
        elif held := consumer.paused() - self.warmup.warming:
            consumer.resume(*held)
        return room

    async def handle(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if tp in self.assignments.revoked or tp in self.warmup.warming:
            # fetched before a rebalance began (`revoking`), or handed on only after it
            # ended (a partition being read back is paused: nothing of it is fetched
            # meanwhile): read again from the committed position once assigned
            return
        for record in records:
            self._dispatch(tp, record.offset, record.value)

    async def after_batch(self, consumer: AIOKafkaConsumer) -> None:
        if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
            await self.commit(consumer)
            self._last_commit = time.monotonic()

    def idle(self) -> bool:
        # (while a rebalance runs the consumer's positions are the old assignment's: a
        # drain must not take what it dropped as consumed)
        return (
            self.tracker.idle()
            and not self.busy
            and not self.warmup.warming
            and not self.assignments.revoked
        )


async def forward(source: asyncio.Event, target: asyncio.Event) -> None:
    """Set `target` once `source` is set (a stop reaching an endpoint, or every one)."""
    await source.wait()
    target.set()
