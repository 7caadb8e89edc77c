"""`chainwatch deliveries given-up|resend`: the webhook deliveries the notifier gave up.

Reads `webhook-dead-letter` and `webhook-deliveries` from Kafka (no ClickHouse: it works
without a sink), decides what is re-sent (`sinks.webhooks.resend.select`) and, for
`resend`, re-sends it with the notifier's delivery code and settings, publishing each
outcome to `webhook-deliveries` (and a failure again to `webhook-dead-letter`) with the
notifier's producer. `given-up` and `resend --dry-run` write nothing; `given-up` reads
the subscriptions file without checking it for sending (no endpoint secret needed).

Deadlines: each Kafka call of the read is bounded by `kafka.request_timeout_s` (+ a
margin, `admin_call_timeout_s`), and so is a read that makes no progress; the producer's
start and stop are bounded (`producer_start`), and each publish by the same call
deadline; each HTTP attempt by `webhooks.timeout_s`, a delivery by the notifier's retry
policy. A first Ctrl-C (SIGINT) or SIGTERM starts no other delivery and abandons a
retry wait (that delivery stays given up, unrecorded); a second one cuts the
attempt under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from chainwatch.errors import Interrupted, UsageError, UserError
from chainwatch.kafka_admin import admin_call_timeout_s
from chainwatch.notify_runner import load_configured, policy_from, targets_from
from chainwatch.settings import Settings
from chainwatch.topic_partitions import partition_counts
from schemas.common import UtcDatetime
from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from schemas.plan import parse_duration
from sinks.daemon_executor import to_daemon_thread
from sinks.topic_read import TopicReader, read_to_end
from sinks.webhooks.delivery import (
    AttemptResult,
    DeliveryResult,
    EndpointHealth,
    close_client,
    http_client,
    request_secrets,
)
from sinks.webhooks.log_producer import LogProducer
from sinks.webhooks.publish import publish
from sinks.webhooks.records import (
    DEAD_LETTER_TOPIC,
    DELIVERIES_TOPIC,
    DeliveryLog,
    WebhookDeadLetter,
)
from sinks.webhooks.resend import GivenUp, delivered_since, outcome_records, resend_one, select
from sinks.webhooks.subscriptions import Endpoint

READ_MARGIN_S = 300.0
"""Records are looked up by their Kafka timestamp from this long before the window (a
record's timestamp is its producer's clock, or the broker's: never quite `failed_at`)."""
_timestamp: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`--since`: a duration back from now (`90m`, `24h`, `7d`) or an RFC 3339 time."""
    now = now or datetime.now(UTC)
    with contextlib.suppress(ValueError):  # a plan's durations, at most a year
        return now - parse_duration(value)
    try:
        when = _timestamp.validate_python(value)
    except ValidationError:
        raise UsageError(
            f"--since {value!r}: expected a duration of at most a year (30m, 24h, 7d) or an "
            "RFC 3339 time with an offset (2027-03-12T00:00:00Z)"
        ) from None
    if when > now:  # nothing failed after it: '0 given up' would read as all well
        raise UsageError(
            f"--since {value!r} is in the future (now is "
            f"{now.isoformat(timespec='seconds').replace('+00:00', 'Z')}): give a time "
            "before it, or a duration back from now (24h)"
        )
    return when


@dataclass
class Summary:
    given_up: list[GivenUp] = field(default_factory=list)
    skipped_records: int = 0
    """Records of the two topics that are no log record (not read as one)."""
    delivered: int = 0
    failed: int = 0
    unknown_endpoints: list[str] = field(default_factory=list)
    """`--endpoint` names neither in the subscriptions file nor on a dead letter of the
    window: a typo, most likely (said as a warning; a removed endpoint's are kept)."""
    configured_endpoints: list[str] = field(default_factory=list)
    """The subscriptions file's endpoint names (a warning lists them)."""
    stopped: bool = False
    not_tried: int = 0
    """Re-sends not done because of a stop: not started, or stopped in a retry wait."""
    superseded: int = 0
    """Re-sends not done because a later message of the alert (or the message itself)
    was delivered to the endpoint after the read: the notifier, running meanwhile."""

    @property
    def to_resend(self) -> list[GivenUp]:
        return [g for g in self.given_up if g.resend]


class _Stopped(Exception):
    """A stop came during a retry wait: the delivery is left given up, unrecorded."""


async def read_since(
    kafka: Kafka, topic: str, partitions: int, since: datetime, *, timeout_s: float
) -> list[bytes | None]:
    """The values of `topic`'s records from `since` (by record timestamp) to its end
    offsets now (`sinks.topic_read`: no group, nothing committed or created)."""
    records = await read_to_end(
        kafka, topic, partitions, since_ms=int(since.timestamp() * 1000),
        stall_s=timeout_s, close_s=timeout_s,
    )  # fmt: skip
    return [record.value for record in records]


def _parse(values: list[bytes | None], model: Any, summary: Summary) -> list[Any]:
    parsed = []
    for value in values:
        try:
            parsed.append(model.model_validate_json(value or b""))
        except ValidationError:
            summary.skipped_records += 1
    return parsed


class Run:
    """One `given-up` or `resend` over the settings' topics and subscriptions file.

    Without `sending` (`given-up`) the file is only read, as written (its endpoints'
    names and formats are what a listing needs): no secret need be set, nor any address
    rule met, and `resend` is refused. With it, the file is checked as `notify` checks it."""

    def __init__(
        self,
        settings: Settings,
        *,
        since: datetime,
        endpoints: Collection[str] = (),
        progress: Callable[[str], None] = lambda _line: None,
        sending: bool = True,
    ) -> None:
        self.settings = settings
        self.since = since
        self.endpoints = set(endpoints)
        self.progress = progress
        self.sending = sending
        self.configured: dict[str, Endpoint] = {
            e.name: e for e in load_configured(settings, sending=sending).endpoints
        }
        self.under_way: str | None = None
        """The re-send whose attempt or outcome is under way (what a second Ctrl-C cuts)."""
        self.reading = False
        """`resend` reads what was given up (changing nothing yet): a first Ctrl-C cuts it."""
        self.policy = policy_from(settings)
        self.kafka_s = admin_call_timeout_s(settings.kafka.request_timeout_s)
        self.summary = Summary()
        self._wanted: set[tuple[str, str]] = set()
        """The endpoints and alerts given up in the window: the only ones whose delivery
        log is kept (`_logs_of`)."""
        self._later: dict[tuple[str, str], list[DeliveryLog]] = {}
        """Deliveries and silences logged after the read, by endpoint and alert."""

    async def _partition_counts(self) -> tuple[list[str], dict[str, int]]:
        """The dead-letter and delivery-log topics' names and partition counts."""
        kafka = self.settings.kafka
        topics = [kafka.topic(DEAD_LETTER_TOPIC), kafka.topic(DELIVERIES_TOPIC)]
        counts = await to_daemon_thread(
            partition_counts, kafka.endpoint, topics, request_timeout_s=kafka.request_timeout_s,
            thread_name="deliveries-partitions",
        )  # fmt: skip
        if missing := [t for t in topics if t not in counts]:
            raise UserError(
                f"topic {missing[0]} does not exist: `chainwatch notify` creates it (is "
                "CHAINWATCH_KAFKA__TOPIC_PREFIX the notifier's?)"
            )
        return topics, counts

    async def _logs_of(self, reader: TopicReader, since_ms: int | None = None) -> list[DeliveryLog]:
        """The delivery log from `reader`'s position (or `since_ms`) to its end, only the
        records of an endpoint and alert given up in the window (`_wanted`), in each
        partition's order. The log holds every delivery of every endpoint: kept whole, a
        day's of a busy notifier (the default `--since`) took gigabytes of memory."""
        kept: list[tuple[int, int, DeliveryLog]] = []
        async for batch in reader.batches_to_end(since_ms=since_ms):
            for record in batch:
                try:
                    log = DeliveryLog.model_validate_json(record.value or b"")
                except ValidationError:
                    self.summary.skipped_records += 1
                    continue
                if (log.endpoint, log.alert_id) in self._wanted:
                    kept.append((record.partition, record.offset, log))
        kept.sort(key=lambda k: (k[0], k[1]))
        return [log for _partition, _offset, log in kept]

    async def read(self, logs_reader: TopicReader | None = None) -> list[GivenUp]:
        """The dead letters of the window, each with what `resend` does with it; the
        delivery log through `logs_reader` when given (`resend` reads on with it)."""
        kafka = self.settings.kafka
        topics, counts = await self._partition_counts()
        margin = timedelta(seconds=READ_MARGIN_S)
        letters = await read_since(
            kafka.endpoint, topics[0], counts[topics[0]], self.since - margin,
            timeout_s=self.kafka_s,
        )  # fmt: skip
        parsed = _parse(letters, WebhookDeadLetter, self.summary)
        self._wanted = {
            (d.endpoint, d.alert_id)
            for d in parsed
            if d.failed_at >= self.since and (not self.endpoints or d.endpoint in self.endpoints)
        }
        # a message given up in the window may have started a retry horizon before it
        horizon = timedelta(seconds=self.policy.retry_horizon_s)
        since_ms = int((self.since - horizon - margin).timestamp() * 1000)
        if logs_reader is None:
            async with TopicReader(
                kafka.endpoint, topics[1], counts[topics[1]],
                stall_s=self.kafka_s, close_s=self.kafka_s,
            ) as reader:  # fmt: skip
                logs = await self._logs_of(reader, since_ms)
        else:
            logs = await self._logs_of(logs_reader, since_ms)
        named = self.configured.keys() | {d.endpoint for d in parsed if d.failed_at >= self.since}
        self.summary.unknown_endpoints = sorted(self.endpoints - named)
        self.summary.configured_endpoints = sorted(self.configured)
        self.summary.given_up = select(
            parsed,
            logs,
            since=self.since,
            endpoints=self.endpoints,
            configured=self.configured,
        )
        return self.summary.given_up

    async def resend(self, stop: asyncio.Event) -> Summary:
        """Read, then re-send what is to be, oldest first, until done or `stop`."""
        if not self.sending:
            raise RuntimeError("a Run without `sending` has its subscriptions unchecked")
        self.reading = True
        try:
            topics, counts = await self._partition_counts()
            async with TopicReader(
                self.settings.kafka.endpoint, topics[1], counts[topics[1]],
                stall_s=self.kafka_s, close_s=self.kafka_s,
            ) as logs_reader:  # fmt: skip
                await self.read(logs_reader)
                self.reading = False
                return await self._resend(stop, logs_reader)
        finally:
            self.reading = False

    async def _resend(self, stop: asyncio.Event, logs_reader: TopicReader) -> Summary:
        todo = self.summary.to_resend
        if not todo:
            return self.summary
        producer = LogProducer(self.settings.kafka.endpoint, stop)
        if not await producer.start():
            self.summary.stopped, self.summary.not_tried = True, len(todo)
            return self.summary
        clients: dict[str, tuple[httpx.AsyncClient, EndpointHealth]] = {}
        try:
            for number, given_up in enumerate(todo, 1):
                if stop.is_set():  # added to one stopped in its retry wait, if any
                    self.summary.stopped = True
                    self.summary.not_tried += len(todo) - number + 1
                    break
                label = f"[{number}/{len(todo)}]"
                if await self._superseded(given_up, label, logs_reader):
                    continue
                await self._one(given_up, label, producer, clients, stop)
        finally:
            for name, (http, _health) in clients.items():
                endpoint = self.configured[name]
                hide = request_secrets(
                    endpoint.url.get_secret_value(), endpoint.pagerduty_routing_key()
                )
                await close_client(http, name, hide=hide)
            await producer.stop()
        return self.summary

    async def _superseded(self, given_up: GivenUp, number: str, logs_reader: TopicReader) -> bool:
        """Whether the delivery log, read on to its end now, has a later message of the
        alert (or this one) delivered to the endpoint since the read: `notify` runs
        meanwhile, and the receiver, fixed, takes the alerts that queued behind the
        failures. Re-sent after such a one, the old message would be the receiver's last
        (an `open` after its `resolved`). Said, counted, and not re-sent."""
        for log in await self._logs_of(logs_reader):
            if log.outcome in ("delivered", "silenced"):
                self._later.setdefault((log.endpoint, log.alert_id), []).append(log)
        letter = given_up.letter
        why = delivered_since(
            letter, given_up.original, self._later.get((letter.endpoint, letter.alert_id), ())
        )
        if why is None:
            return False
        self.summary.superseded += 1
        self.progress(
            f"{number} {letter.endpoint} alert {letter.alert_id} webhook-id "
            f"{letter.webhook_id}: not re-sent: {why} (after this resend read the log)"
        )
        return True

    async def _one(
        self,
        given_up: GivenUp,
        number: str,
        producer: LogProducer,
        clients: dict[str, tuple[httpx.AsyncClient, EndpointHealth]],
        stop: asyncio.Event,
    ) -> None:
        letter = given_up.letter
        endpoint = self.configured[letter.endpoint]
        if endpoint.name not in clients:
            clients[endpoint.name] = (
                http_client(self.policy, targets=targets_from(self.settings)),
                EndpointHealth(endpoint.name, endpoint.host),
            )
        http, health = clients[endpoint.name]
        what = f"{number} {endpoint.name} alert {letter.alert_id} webhook-id {letter.webhook_id}"
        self.progress(f"{what}: sending to {endpoint.host}")
        self.under_way = what

        def attempted(result: AttemptResult) -> None:
            said = f"HTTP {result.status}" if result.status else result.error
            self.progress(f"{what}: attempt {'ok' if result.delivered else 'failed'}: {said}")

        async def wait(delay_s: float) -> None:
            try:
                async with asyncio.timeout(delay_s):
                    await stop.wait()
            except TimeoutError:
                return
            raise _Stopped

        try:
            result = await resend_one(
                http, given_up, endpoint, self.policy, health=health, sleep=wait,
                on_attempt=attempted,
            )  # fmt: skip
        except _Stopped:
            self.under_way = None
            self.progress(f"{what}: stopped before its retry; it stays given up")
            self.summary.stopped = True
            self.summary.not_tried += 1
            return
        await self._record(given_up, endpoint, result, producer)
        self.under_way = None
        if result.delivered:
            self.summary.delivered += 1
            self.progress(f"{what}: delivered")
        else:
            self.summary.failed += 1
            self.progress(f"{what}: given up again: {result.last_error}")

    async def _record(
        self,
        given_up: GivenUp,
        endpoint: Endpoint,
        result: DeliveryResult,
        producer: LogProducer,
    ) -> None:
        """Publish the outcome, as the notifier does, each write within its deadline."""
        entry, letter = outcome_records(given_up, endpoint, result)
        kafka = self.settings.kafka
        key = entry.webhook_id
        writes = [(kafka.topic(DELIVERIES_TOPIC), entry.model_dump_json().encode())]
        if letter is not None:
            writes.append((kafka.topic(DEAD_LETTER_TOPIC), letter.model_dump_json().encode()))
        for topic, value in writes:
            try:
                async with deadline(self.kafka_s):
                    await publish(producer, topic, key, value)
            except TimeoutError:
                ended = "delivered" if result.delivered else "failed again"
                raise UserError(
                    f"Kafka at {kafka.bootstrap} did not take the outcome of webhook-id {key} "
                    f"({ended}) within {self.kafka_s:g} s; stopped (a next resend may send "
                    "it again: its receiver de-duplicates on the webhook-id)"
                ) from None


@contextmanager
def _signals(
    stop: asyncio.Event, task: asyncio.Task[Any], at_once: Callable[[], bool]
) -> Iterator[None]:
    """SIGINT and SIGTERM: the first sets `stop`, the second cancels `task`; the first
    cancels it too while `at_once()` (nothing is under way that a stop should let end:
    the read before the first re-send, which Ctrl-C left to run out its Kafka deadlines)."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set() or at_once():
            task.cancel()
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_resend(run: Run, *, dry_run: bool) -> Summary:
    """`resend` (or its `--dry-run`, which only reads) with Ctrl-C handled: the first
    lets the re-send under way end (a second is `KeyboardInterrupt`); before the first
    re-send, while it reads, the first is `KeyboardInterrupt`."""

    async def main() -> Summary:
        if dry_run:
            await run.read()
            return run.summary
        stop = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None
        with _signals(stop, task, at_once=lambda: run.reading):
            return await run.resend(stop)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if run.under_way is not None:  # else a line of its own said how it ended
            # the command's one interrupted line (the entry point's own would say less)
            raise Interrupted(
                f"interrupted; chainwatch deliveries resend stopped, {run.under_way} cut by "
                "a second Ctrl-C, its outcome perhaps not recorded (`chainwatch deliveries "
                "given-up` says whether it is still to re-send; the receiver may have it, "
                "and a re-send keeps its webhook-id)"
            ) from None
        raise KeyboardInterrupt from None


def run_given_up(run: Run) -> Summary:
    asyncio.run(run.read())
    return run.summary
