"""`chainwatch notify`: alerts topic → one pipeline per endpoint → HTTP deliveries in its format.

Lifecycle and guarantees:
- Each endpoint is an independent pipeline (`EndpointPipe`): its own Kafka
  consumer group on `alerts` (`<app_id>-notify.<endpoint name>`), bounded
  queue, HTTP client (with its own resolver threads, targets.py), worker tasks
  and committed position. A slow or dead
  endpoint therefore never delays another one, nor another one's commits.
- A pipeline fetches only what its queue can hold (its partitions are paused
  while the queue is full, the consumer keeps polling so it stays in its
  group; a partition being read back stays paused whatever the room): nothing
  is dropped for lack of room.
- A delivery ends `delivered` or `gave_up` (4xx, a refused target, the retry
  horizon or `max_attempts` reached, or the endpoint failing for longer than
  the horizon, see `EndpointHealth`); both publish a `DeliveryLog` (→ ClickHouse
  through the sink), and giving up also publishes a `WebhookDeadLetter` with the
  payload, so nothing is lost: `chainwatch deliveries resend` re-sends it
  (resend.py).
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
- A rebalance does not mix assignments (rebalance.py): a job of a partition
  revoked meanwhile is not delivered, or its outcome no longer moves the
  partition's position; the partition's next owner reads it again.
- Silences (silences.py, silence_follower.py): every notifier reads the whole
  `webhook-silences` topic and follows it; a delivery is checked at the moment it
  would be sent, with silences at least as new as its record (before a retry: as
  new as the retry), and one a silence in force covers is recorded `silenced`
  (delivery log, no dead letter), not sent (nor retried). When no silence covers it
  any more, an open alert's latest message so held is delivered then, under its
  `webhook-id` (`EndpointPipe._release_held`; kept on `webhook-held`, held.py, read back
  at each assignment: a restart during the window does not lose it).
  While the topic cannot be read, deliveries wait (the notifier is not ready).
- Formats (formats.py): `standard` is signed Standard Webhooks; `slack`, `teams`
  and `pagerduty` go through exactly the same queue, retries and delivery log.
- Secrets, PagerDuty routing keys and full URLs (which may embed tokens) are never
  logged (a dead letter keeps the routing key as `<redacted>`): logs name the
  endpoint and its host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from schemas.kafka_security import Kafka
from sinks.webhooks.delivery import RetryPolicy, error_text
from sinks.webhooks.dispatcher import (
    MAX_HELD,
    EndpointPipe,
    NotifyStats,
    PipeConfig,
    Topics,
    forward,
)
from sinks.webhooks.held import count_held
from sinks.webhooks.log_producer import LogProducer
from sinks.webhooks.silence_follower import SilenceFollower
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import TargetPolicy
from sinks.webhooks.warmup import WarmupConfig

log = structlog.stdlib.get_logger(__name__)


class Notifier:
    """Every endpoint's pipeline, sharing one producer for the delivery log."""

    def __init__(
        self,
        *,
        bootstrap: Kafka,
        group_id: str,
        topics: Topics,
        endpoints: Sequence[Endpoint],
        policy: RetryPolicy,
        targets: TargetPolicy,
        queue_size: int = 10_000,
        consumer_options: Mapping[str, Any] | None = None,
        warmup: WarmupConfig | None = None,
        silences: SilenceFollower | None = None,
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
            silences=silences,
            endpoints=tuple(e.name for e in endpoints),
        )
        self.silences = silences
        self.endpoints = list(endpoints)
        self.pipes: list[EndpointPipe] = []
        self.held: dict[str, int] | None = None
        """What a drain left held, per endpoint (`_count_held`)."""

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
            silenced=sum(s.silenced for s in pipes),
            released=sum(s.released for s in pipes),
            endpoints=len(pipes),
            held=self.held,
        )

    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> NotifyStats:
        """Deliver until `stop` (or, with `drain`, until every endpoint is caught up)."""
        producer = LogProducer(self.config.bootstrap, stop)
        # bounded, and a stop meanwhile ends it: the idempotent start retries for ever
        if not await producer.start():
            return self.stats
        # the silences are followed while the pipes run (cancelled after them: it keeps
        # nothing that needs a graceful end)
        following = None if self.silences is None else asyncio.create_task(self.silences.run(stop))
        try:
            self.pipes = [EndpointPipe(e, self.config, producer) for e in self.endpoints]
            await self._run_pipes(stop, drain)
            if drain and not stop.is_set():
                await self._count_held()
        finally:
            if following is not None:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            await producer.stop()  # bounded: a stop's deadline counts on it
        return self.stats

    async def _count_held(self) -> None:
        """A drain's end: how many alerts each endpoint leaves held by a silence, read from
        the held topic, one line per endpoint that holds some (`notify_drain_left_held`).
        A drain does not wait for them (a silence may last days), and before it said
        nothing of them: they looked delivered, or lost."""
        topics = self.config.topics
        if not topics.held or self.silences is None:
            return
        names = [e.name for e in self.endpoints]
        try:
            self.held = await count_held(
                self.config.bootstrap,
                topics.held,
                topics.held_partitions,
                names,
                call_s=self.config.warmup.timeout_s,
                limit=MAX_HELD * len(names),  # keys only: each endpoint's bound
            )
        except Exception as exc:  # Kafka's errors, its deadline: the drain's work is done
            log.warning("notify_drain_held_unknown", topic=topics.held, error=error_text(exc))
            return
        for name, count in self.held.items():
            if count:
                log.info(
                    "notify_drain_left_held",
                    endpoint=name,
                    held=count,
                    topic=topics.held,
                    consequence="sent when their silence ends, by a notifier running then",
                )

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

        relay = asyncio.create_task(forward(stop, halt))
        runs = [asyncio.create_task(guarded(p)) for p in self.pipes]
        try:
            await asyncio.gather(*runs)
        finally:
            for task in (relay, *runs):
                task.cancel()
            await asyncio.gather(relay, *runs, return_exceptions=True)
        if errors:
            raise errors[0]
