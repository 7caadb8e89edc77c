"""`chainwatch notify`: alerts topic → one pipeline per endpoint → HTTP deliveries in its format.

Lifecycle and guarantees:
- Each endpoint is an independent pipeline (`EndpointPipe`): its own Kafka
  consumer group on `alerts` (`<app_id>-notify.<endpoint name>`), bounded
  queue, HTTP client, worker tasks and committed position. A slow or dead
  endpoint therefore never delays another one, nor another one's commits.
- A pipeline fetches only what its queue can hold (its partitions are paused
  while the queue is full, the consumer keeps polling so it stays in its
  group; a partition being read back stays paused whatever the room): nothing
  is dropped for lack of room.
- A delivery ends `delivered` or `gave_up` (4xx, a refused target, the retry
  horizon or `max_attempts` reached, or the endpoint failing for longer than
  the horizon, see `EndpointHealth`); both publish a `DeliveryLog` (→ ClickHouse
  through the sink), and giving up also publishes a `WebhookDeadLetter` with the
  payload, so nothing is lost: it can be re-sent by hand.
- The endpoint's offsets are committed only below its lowest record with a
  pending delivery (`OffsetTracker`), after that record's outcome was published;
  each commit's metadata also lists the records above that position whose
  delivery finished (done.py), which the next assignment of the partition does
  not deliver again (read with the committed positions, warmup.py), in commit
  requests the broker takes (commits.py). Its queue
  is thus the `alerts` topic itself, from its committed position: a `kill -9`
  re-delivers what had no outcome yet and what finished since the last commit
  (about half a second). A stop (SIGINT, SIGTERM) starts nothing more and lets
  the attempts under way end and be recorded (`finish_in_flight`), so the next
  run re-delivers only what was not attempted or waited to retry: what
  `concurrency > 1` delivered after a record still retried is in the metadata
  (unless more finished than it holds, logged; or reading it failed, logged:
  then it is posted again, as before). Because a dead endpoint gives up within
  about `retry_horizon_s` (+ one attempt), its position trails by no more than
  that, far inside the topic's retention.
- A failure while building or delivering one message (a bug: the audit found a
  non-finite lateness and an exotic `Retry-After` that raised) gives that delivery
  up like any other, with reason `processing_error: ...` in its `DeliveryLog` and
  dead letter, logged as `webhook_processing_error`; the worker goes on with the
  next one. A worker that still ends (its own bug) stops the whole notifier with
  `WorkerDied` (outcome error, exit 1), never a silent hang: each endpoint's
  workers are watched while it consumes and checked again when it stops. Such
  an error (or one of the consumer loop) first stops every endpoint the
  graceful way, as a SIGTERM does, that one's other workers included: the
  posts under way end and are recorded and committed, so the next run does
  not post them again.
- A record on `alerts` that is no alert (a tombstone, not JSON, a contract
  breach) is skipped, counted and logged with its position and reason
  (invalid.py: why it is not dead-lettered, and the rate limit).
- At-least-once per endpoint; receivers de-duplicate on `webhook-id`, one per
  distinct message (payloads.py); PagerDuty also on `dedup_key` = `alert_id`.
- A repeat (the engine re-publishing an alert unchanged, as it does for every
  alert it owns after a restart) is not delivered again: it is consumed with no
  delivery and counted (`chainwatch_webhook_repeats_skipped_total`), since the
  endpoint has the message already, or has it pending at a lower offset that
  its position does not pass first (payloads.py). Slack and Teams do not
  de-duplicate, and got every owned alert again per worker restart.
- The memory that recognises repeats survives a restart and a rebalance: each
  partition an endpoint is assigned stays paused until the endpoint has read
  back the records before its committed position (warmup.py: where that runs,
  and why a failed read-back only lets repeats through, never loses a delivery).
  What an endpoint read of a partition it loses is forgotten with it.
- A rebalance does not mix assignments: every job carries its partition's
  assignment generation, bumped at each assignment and revocation. A job of a
  revoked partition still queued is dropped undelivered (the revocation's
  commit stayed below it and its metadata lists only finished records, so
  whoever owns the partition next reads it again and delivers it);
  an attempt under way finishes and its outcome is published (a delivery
  waiting to retry is left without one, `_before_retry`), but it leaves
  the offsets and the memory of messages alone: they belong to the partition's
  new assignment, which reads that record again (eager rebalancing hands a
  partition a notifier keeps back to it, so this is every rebalance).
- Formats (formats.py): `standard` is signed Standard Webhooks; `slack`, `teams`
  and `pagerduty` go through exactly the same queue, retries and delivery log.
- Secrets, PagerDuty routing keys and full URLs (which may embed tokens) are never
  logged (a dead letter keeps the routing key as `<redacted>`): logs name the
  endpoint and its host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from standardwebhooks import Webhook

from schemas.alerts import Alert
from sinks.backoff import Backoff
from sinks.consumer import (
    STALLED_STOP_S,
    KafkaStalled,
    KafkaWaits,
    consume,
    new_consumer,
    start_consumer,
    stop_consumer,
)
from sinks.producer_start import start_producer, stop_producer
from sinks.webhooks import metrics
from sinks.webhooks.commits import Committer
from sinks.webhooks.delivery import (
    AttemptResult,
    DeliveryResult,
    EndpointHealth,
    RetryPolicy,
    deliver,
    http_client,
)
from sinks.webhooks.done import LeftOutLog
from sinks.webhooks.invalid import InvalidAlertLog, NotAnAlert
from sinks.webhooks.offsets import OffsetTracker
from sinks.webhooks.outcomes import Job, dead_letter, delivery_log, error_text, processing_error
from sinks.webhooks.payloads import MessageIds, Seen, render
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import TargetPolicy
from sinks.webhooks.warmup import Warmup, WarmupConfig

log = structlog.stdlib.get_logger(__name__)

COMMIT_INTERVAL_S = 0.5
STOP_GRACE_S = 2.0
"""On a stop, how long past the endpoint's attempt deadline (`timeout_s`) the attempts
under way may take to end and have their outcomes recorded."""


class _Abandoned(Exception):
    """A delivery left between two attempts because the notifier stops or its partition
    was revoked: no outcome is recorded and its record is not committed, so the next run
    or the partition's next assignment delivers it."""


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
    endpoints: int = 0
    """How many endpoints `repeats`, `delivered` and `gave_up` are summed over."""


@dataclass(frozen=True)
class Topics:
    alerts: str
    deliveries: str
    dead_letter: str


def _status_class(result: AttemptResult) -> str:
    return "error" if result.status == 0 else f"{result.status // 100}xx"


PERMANENT_PUBLISH_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)
"""The broker will never take this record: retrying cannot help."""


async def publish(producer: AIOKafkaProducer, topic: str, key: str, value: bytes) -> bool:
    """Publish one log record, retrying while Kafka is unavailable (each try bounded by
    the producer's `request_timeout_ms`); False, logged and counted, for a record the
    broker refuses for good (records are bounded, so this is a bug, never a loop)."""
    backoff = Backoff(0.2, 10.0)
    while True:
        try:
            await producer.send_and_wait(topic, value=value, key=key.encode())
            return True
        except PERMANENT_PUBLISH_ERRORS as exc:
            log.error("publish_refused", topic=topic, bytes=len(value), error=type(exc).__name__)
            metrics.LOG_REFUSED.labels(topic).inc()
            return False
        except KafkaError as exc:
            log.warning("publish_failed", topic=topic, error=type(exc).__name__)
            await asyncio.sleep(backoff.next())


@dataclass(frozen=True)
class PipeConfig:
    bootstrap: str
    group_id: str
    topics: Topics
    policy: RetryPolicy
    targets: TargetPolicy
    queue_size: int
    consumer_options: Mapping[str, Any]
    warmup: WarmupConfig = field(default_factory=WarmupConfig)


class EndpointPipe:
    """One endpoint: its consumer group, queue, HTTP client, workers and offsets."""

    def __init__(self, endpoint: Endpoint, config: PipeConfig, producer: AIOKafkaProducer) -> None:
        self.endpoint = endpoint
        self.config = config
        self.policy = config.policy
        self.producer = producer
        self.group_id = f"{config.group_id}.{endpoint.name}"
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=config.queue_size)
        self.signer = Webhook(endpoint.signing_secret()) if endpoint.signed else None
        self.routing_key = endpoint.pagerduty_routing_key()
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
        topics = config.topics
        metrics.start_series(endpoint.name, (topics.deliveries, topics.dead_letter))
        self.stats = NotifyStats(endpoints=1)
        self.in_flight = 0
        self._none_in_flight = asyncio.Event()
        self._none_in_flight.set()
        self.stopping = asyncio.Event()
        """Set when the endpoint stops: no delivery starts and none retries any more."""
        self._last_commit = 0.0
        self._generations: dict[TopicPartition, int] = {}
        """Per partition, its current assignment (`Job.generation`); bumped by `assigned`
        and `forget`."""
        self._revoked: set[TopicPartition] = set()
        self._revocation = asyncio.Event()
        """Set when a rebalance begins (then replaced): it ends the retry waits."""
        """Revoked and not assigned again yet: anything still handed on of them is stale."""
        self.left_out = LeftOutLog(endpoint.name)
        self.committer = Committer(endpoint.name, self.tracker, self.left_out)

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or not self.queue.empty()

    # --- deliveries ----------------------------------------------------------

    async def _deliver(
        self, http: httpx.AsyncClient, job: Job
    ) -> tuple[dict[str, Any], DeliveryResult]:
        """Build the message, then attempt it; a failure of either is the outcome
        `processing_error` (given up), never an exception out of the worker."""
        began = time.monotonic()
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
            metrics.ATTEMPTS.labels(name, _status_class(result)).inc()

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
            )
        except _Abandoned:
            raise
        except Exception as exc:
            result = self._processing_error(job, "delivering failed", exc, began, statuses)
        return payload, result

    def _processing_error(
        self, job: Job, what: str, exc: Exception, began: float, statuses: list[int] | None = None
    ) -> DeliveryResult:
        """A delivery given up on a bug: logged with its trace, the reason kept short."""
        log.error(
            "webhook_processing_error",
            endpoint=self.endpoint.name,
            host=self.endpoint.host,
            webhook_id=job.msg_id,
            alert_id=job.alert.alert_id,
            error=f"{what}: {error_text(exc)}",
            exc_info=exc,
        )
        return processing_error(what, exc, began, statuses)

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
            payload, result = await self._deliver(http, job)
        except _Abandoned:
            return  # the notifier stops: its record stays pending, so it is not committed
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
        if self.current(job):  # else the same offset may be pending in the new assignment
            self.tracker.done(job.tp, job.offset)

    async def _before_retry(self, job: Job, delay_s: float) -> None:
        """The wait before a retry, cut short by a stop (`_Abandoned`): a stopping
        notifier ends the attempts under way, not the retries after them. A job whose
        partition was revoked meanwhile is left too: the partition's next assignment
        (here or elsewhere) reads the record again and delivers it, while retrying it
        here, up to the retry horizon, only took a worker and posted it twice."""
        until = time.monotonic() + delay_s
        while True:
            revocation = self._revocation  # set (and replaced) when a rebalance begins
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
            if self.stopping.is_set() or not self.current(job) or job.tp in self._revoked:
                raise _Abandoned  # (a retry wait lasts up to minutes: a Retry-After)
            if time.monotonic() >= until:
                return  # else another partition's revocation: wait on

    async def _work(self, http: httpx.AsyncClient) -> None:
        while True:
            job = await self.queue.get()
            metrics.QUEUE_DEPTH.labels(self.endpoint.name).set(self.queue.qsize())
            if not self.current(job) or job.tp in self._revoked or self.stopping.is_set():
                # revoked (or being revoked) while queued, or the notifier stops: read
                # again from the committed position, which stays below it
                continue
            self.in_flight += 1
            self._none_in_flight.clear()
            try:
                await self._settle(http, job)
            finally:
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
            await asyncio.wait_for(self._none_in_flight.wait(), wait_s)
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
        return Job(alert, seen.msg_id, tp, offset, self._generations.get(tp, 0))

    def _remember(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        """A record read back by the warm-up: remembered, never delivered. A record the
        live path skips as invalid (it was logged when first read) is skipped here too."""
        with contextlib.suppress(Exception):
            self._seen(tp, offset, value)

    def current(self, job: Job) -> bool:
        """Whether `job` was read in its partition's current assignment.

        Only such a job may settle its offset and its message: after a revocation,
        an older job's outcome would release the same offset pending again in the
        new assignment (and the commit would pass a record still being delivered),
        or forget the message its re-read remembers (and a repeat would be posted
        again).
        """
        return job.generation == self._generations.get(job.tp, 0)

    def assigned(self, tps: Collection[TopicPartition]) -> None:
        """A new assignment of `tps`: jobs read before it are no longer current, and it
        reads from the committed position, knowing nothing read before (the read-back
        rebuilds the memory of messages)."""
        self._revoked.clear()  # the rebalance ended: what is not assigned here is another's
        for tp in tps:
            self._next_generation(tp)
            self.tracker.forget(tp)
            self.ids.forget(tp.partition)

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
        self._revoked.update(tps)
        self._revocation.set()  # the retry waits of these partitions end now
        self._revocation = asyncio.Event()

    def _next_generation(self, tp: TopicPartition) -> None:
        self._generations[tp] = self._generations.get(tp, 0) + 1

    def forget(self, tp: TopicPartition) -> None:
        """The partition is read again from its committed position (or by someone else):
        its offsets and messages are dropped, and its jobs read so far are no longer
        current (those queued are not delivered: the committed position is below them)."""
        self._next_generation(tp)
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
        metrics.QUEUE_DEPTH.labels(self.endpoint.name).set(self.queue.qsize())

    # --- consumer ------------------------------------------------------------

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit what is finished, in requests the broker takes (commits.py)."""
        await self.committer.commit(consumer)

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
        consumer.subscribe(topics, listener=_Revoke(self, consumer))
        http = http_client(
            self.policy, targets=self.config.targets, concurrency=self.endpoint.concurrency
        )
        waits = KafkaWaits(f"Kafka at {self.config.bootstrap}", drain=drain)
        if not await start_consumer(consumer, stop, waits):
            await self.warmup.stop()  # the first assignment may have started one
            await http.aclose()
            return self.stats
        workers = [
            asyncio.create_task(self._work(http), name=f"webhook-{self.endpoint.name}-{i}")
            for i in range(self.endpoint.concurrency)
        ]
        self._last_commit = time.monotonic()
        ending = asyncio.Event()  # `stop`, or an error of this endpoint
        relay = asyncio.create_task(_relay(stop, ending))
        consuming = asyncio.create_task(
            consume(consumer, topics, self, ending, drain=drain, waits=waits)
        )
        # a stop halts deliveries at once: `consume` sees it only between fetches, and
        # may be in a commit for seconds (a coordinator gone) while workers take more
        stopped = asyncio.create_task(self._stopping_on(ending))
        try:
            try:
                await asyncio.wait([consuming, *workers], return_when=asyncio.FIRST_COMPLETED)
                self._check_workers(workers)  # a dead worker would leave its queue unserved
                await consuming
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
        finally:
            for task in (relay, consuming, stopped, *workers):
                task.cancel()
            await asyncio.gather(relay, consuming, stopped, *workers, return_exceptions=True)
            await self.warmup.stop()
            await self.commit(consumer)
            stalled = (
                consuming.done()
                and not consuming.cancelled()
                and isinstance(consuming.exception(), KafkaStalled)
            )
            await stop_consumer(consumer, within_s=STALLED_STOP_S if stalled else None)
            await http.aclose()
        self._check_workers(workers)  # also one that failed while we were stopping
        return self.stats

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
                error=error_text(exc) if exc else "returned",
                exc_info=exc,
            )
            raise WorkerDied(
                f"endpoint {self.endpoint.name}: delivery worker {task.get_name()} died "
                f"({error_text(exc) if exc else 'returned'}): the notifier stops rather than hold "
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
        if tp in self._revoked or tp in self.warmup.warming:
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
            self.tracker.idle() and not self.busy and not self.warmup.warming and not self._revoked
        )


class Notifier:
    """Every endpoint's pipeline, sharing one producer for the delivery log."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Topics,
        endpoints: Sequence[Endpoint],
        policy: RetryPolicy,
        targets: TargetPolicy,
        queue_size: int = 10_000,
        consumer_options: Mapping[str, Any] | None = None,
        warmup: WarmupConfig | None = None,
    ) -> None:
        self.config = PipeConfig(
            bootstrap=bootstrap,
            group_id=group_id,
            topics=topics,
            policy=policy,
            targets=targets,
            queue_size=queue_size,
            consumer_options=dict(consumer_options or {}),
            warmup=warmup or WarmupConfig(),
        )
        self.endpoints = list(endpoints)
        self.pipes: list[EndpointPipe] = []

    @property
    def stats(self) -> NotifyStats:
        pipes = [p.stats for p in self.pipes]
        return NotifyStats(
            alerts=max((s.alerts for s in pipes), default=0),
            invalid=max((s.invalid for s in pipes), default=0),
            repeats=sum(s.repeats for s in pipes),
            finished=sum(s.finished for s in pipes),
            delivered=sum(s.delivered for s in pipes),
            gave_up=sum(s.gave_up for s in pipes),
            endpoints=len(pipes),
        )

    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> NotifyStats:
        """Deliver until `stop` (or, with `drain`, until every endpoint is caught up)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.config.bootstrap, acks="all", enable_idempotence=True
        )
        # bounded, and a stop meanwhile ends it: the idempotent start retries for ever
        if not await start_producer(producer, self.config.bootstrap, stop=stop):
            return self.stats
        try:
            self.pipes = [EndpointPipe(e, self.config, producer) for e in self.endpoints]
            await self._run_pipes(stop, drain)
        finally:
            await stop_producer(producer)  # bounded: a stop's deadline counts on it
        return self.stats

    async def _run_pipes(self, stop: asyncio.Event, drain: bool) -> None:
        """Run every pipeline until `stop`; one that fails stops the others the graceful
        way (as `stop` does: their posts under way end, recorded and committed), then
        its error is raised. Cancelling them cut those posts with no outcome nor commit:
        the next run posted them again."""
        halt = asyncio.Event()
        errors: list[Exception] = []  # in the order they happened (`on_error` at once)

        def failed(exc: Exception) -> None:
            if exc not in errors:
                errors.append(exc)
            halt.set()

        async def guarded(pipe: EndpointPipe) -> None:
            try:
                await pipe.run(halt, drain=drain, on_error=failed)
            except Exception as exc:
                failed(exc)

        relay = asyncio.create_task(_relay(stop, halt))
        runs = [asyncio.create_task(guarded(p)) for p in self.pipes]
        try:
            await asyncio.gather(*runs)
        finally:
            for task in (relay, *runs):
                task.cancel()
            await asyncio.gather(relay, *runs, return_exceptions=True)
        if errors:
            raise errors[0]


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


class _Revoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit and forget what is revoked; warm up what is assigned (warmup.py)."""

    def __init__(self, pipe: EndpointPipe, consumer: AIOKafkaConsumer) -> None:
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
            await self.pipe.commit(self.consumer)
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
