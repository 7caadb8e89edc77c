"""The consumer loop shared by `chainwatch sink` and `chainwatch notify`.

Both read Kafka the same way: a consumer group without auto-commit (each
commits only what it has finished: stored rows, finished deliveries), from the
earliest offset when the group has none, `read_committed`. `consume` fetches in
batches no larger than the handler says it can take (a handler that cannot take
more pauses its partitions and returns 0; the loop keeps polling, so the group
membership stays alive), hands each partition's records over in order, skips
records of partitions a rebalance took away meanwhile, then lets the handler
flush or commit. With `drain` it returns once every subscribed topic is
assigned, the consumer's position has reached the end offsets taken when the
assignment last changed, and the handler is idle.

aiokafka waits on Kafka without a deadline in several places (a subscribed
consumer's start and a fetch during a rebalance wait for an assignment, a
position or a committed offset for a coordinator). Every such wait goes through
`KafkaWaits`: a drain (a batch job the user expects to end) that makes no
progress for `STALL_S` ends with `KafkaStalled`, one line naming Kafka; a
long-running sink or notifier goes on waiting for Kafka, as it does at its start,
and says so (`kafka_waiting`, then `kafka_waiting_over`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Collection, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from schemas.deadline import cancel_requests, cancelled_since, deadline
from schemas.kafka_security import Kafka, aiokafka_kwargs
from sinks.errors import SinkError

log = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

POLL_MS = 100

STALL_S = 60.0
"""How long the loop waits on Kafka without progress before it says so: no assignment
of its topics, no answer to a fetch, end offsets, a position or a committed offset, or -
draining - no records while behind the end offsets and nothing paused by the handler.
A group's rebalance waits for a member that died for its session timeout (10 s), so a
healthy Kafka answers well within it."""


class KafkaStalled(SinkError):
    """A drain made no progress for `STALL_S`: Kafka did not answer what it waited for."""


class KafkaWaits:
    """The waits of one consumer loop on Kafka, and what is done when one lasts
    `stall_s` with no progress: raise `KafkaStalled` (`drain`), or log `kafka_waiting`
    (once per `stall_s`) and go on waiting, then `kafka_waiting_over` when Kafka answers.

    `kafka` names the broker in the error and the log ("Kafka at host:9092").
    """

    def __init__(
        self, kafka: str = "Kafka", *, drain: bool = False, stall_s: float | None = None
    ) -> None:
        self.kafka = kafka
        self.drain = drain
        self.stall_s = STALL_S if stall_s is None else stall_s
        self._since = time.monotonic()
        self._waited_since: float | None = None
        """When the wait that was logged began (None: no wait logged)."""
        self._excused = 0.0
        """Seconds of our own work taken off the stall clock so far (`ours`)."""
        self._ours = 0
        """`ours` blocks under way: a wait that runs our work (a rebalance listener's
        flush inside a fetch) does not stall meanwhile."""

    @contextlib.contextmanager
    def ours(self) -> Iterator[None]:
        """Time spent inside is our own work (the handler, a flush to ClickHouse, a
        rebalance listener's), not a wait on Kafka: it does not count towards a stall.

        A sink's flush may take minutes (a slow insert, a ClickHouse outage ridden
        out), and the next empty fetch then found the stall clock long run out: a
        healthy drain ended with `KafkaStalled`. Nested blocks are counted once; the
        clock never moves past now."""
        began, excused = time.monotonic(), self._excused
        self._ours += 1
        try:
            yield
        finally:
            self._ours -= 1
            now = time.monotonic()
            extra = (now - began) - (self._excused - excused)  # not taken off already
            self._excused += extra
            self._since = min(self._since + extra, now)

    def progress(self) -> None:
        """Kafka answered, or the loop waits on its handler, not on Kafka."""
        now = time.monotonic()
        if self._waited_since is not None:
            log.info(
                "kafka_waiting_over", kafka=self.kafka, waited_s=round(now - self._waited_since, 1)
            )
            self._waited_since = None
        self._since = now

    def check(self, what: str) -> None:
        """No progress since the last check that made some: stalled once `stall_s` passed."""
        if time.monotonic() - self._since >= self.stall_s and not self._ours:
            self._stalled(what)

    async def within(
        self,
        work: Awaitable[T],
        stopped: asyncio.Future[Any],
        what: str,
        *,
        answer_is_progress: bool = True,
    ) -> tuple[bool, T | None]:
        """`(True, work's result)`, or `(False, None)` when `stopped` comes first; `work`
        waits at most until the stall deadline (see the class). If it does not finish,
        it is cancelled and awaited: nothing is left running behind. Called inside our
        own work (`ours`: the sink's handler asking for a committed offset) it is a wait
        on Kafka all the same, timed from its start; only our work that runs inside it
        (a rebalance listener's flush inside a fetch) holds its stall clock."""
        task = asyncio.ensure_future(work)
        inside = self._ours
        began = time.monotonic() if inside else None  # inside `ours`: `_since` is stale
        try:
            while True:
                since = self._since if began is None else began
                # a call that answers at once is not the wait that stalled (a loop's turn
                # after the deadline): each gets a moment, at most a second, to answer
                left = max(min(1.0, self.stall_s), since + self.stall_s - time.monotonic())
                await asyncio.wait(
                    (task, stopped), timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if task.done():
                    result = task.result()
                    if answer_is_progress:
                        self.progress()
                    return True, result
                if stopped.done():
                    break
                if self._ours == inside:
                    if began is not None:
                        self._since = max(self._since, began)
                    self._stalled(what)
                    if began is not None:
                        began = self._since
        except BaseException:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False, None

    def _stalled(self, what: str) -> None:
        if self.drain:
            raise KafkaStalled(
                f"{self.kafka} gave {what} for {self.stall_s:g} s, so the drain stopped (what it "
                "did not commit is read again next time); check the broker (`chainwatch "
                "kafka status`, `chainwatch doctor`) and CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS"
            )
        if self._waited_since is None:
            self._waited_since = self._since
        log.warning(
            "kafka_waiting",
            kafka=self.kafka,
            waiting_for=what,
            waited_s=round(time.monotonic() - self._waited_since, 1),
            hint="it goes on waiting for Kafka; check the broker",
        )
        self._since = time.monotonic()  # the next line after another stall_s


class Batches(Protocol):
    """What `consume` drives: a sink or one endpoint of the notifier."""

    def fetch_limit(self, consumer: AIOKafkaConsumer) -> int:
        """Records the next fetch may return; pause/resume partitions here."""
        ...

    async def handle(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Consecutive records of one assigned partition, in offset order."""
        ...

    async def after_batch(self, consumer: AIOKafkaConsumer) -> None:
        """After each fetch (also an empty one): flush, commit."""
        ...

    def idle(self) -> bool:
        """Nothing in progress (for `drain`)."""
        ...


def new_consumer(bootstrap: Kafka, group_id: str | None, **options: Any) -> AIOKafkaConsumer:
    """A consumer that commits only what it is told to (None: no group, it commits nothing)."""
    settings: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    settings.update(options)
    return AIOKafkaConsumer(**aiokafka_kwargs(bootstrap), group_id=group_id, **settings)


COMMIT_TIMEOUT_S = 10.0
"""A commit of finished offsets gives up after this (they are offered again next time)."""


async def commit_within(
    consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int | tuple[int, str]]
) -> None:
    """`consumer.commit(offsets)` (each an offset or `(offset, metadata)`), or `TimeoutError`
    after `COMMIT_TIMEOUT_S`: aiokafka's commit waits for a group coordinator as long as
    the broker is gone, and a stop of the sink or the notifier waits for the commit."""
    async with deadline(COMMIT_TIMEOUT_S):
        await consumer.commit(dict(offsets))


async def start_consumer(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, waits: KafkaWaits | None = None
) -> bool:
    """`consumer.start()`, or False (the consumer stopped) when `stop` comes first.

    A subscribed consumer's start waits for its first assignment, and while a dead
    member of the group holds the rebalance (a process killed within its session
    timeout) or the broker is gone, that is a long or endless wait: a sink or a
    notifier signalled meanwhile did not stop. The wait goes through `waits` (a
    drain's ends with `KafkaStalled`).
    """
    waits = waits or KafkaWaits()
    stopped = asyncio.ensure_future(stop.wait())
    try:
        started, _ = await waits.within(consumer.start(), stopped, "no assignment")
        if started:
            return True
    except KafkaStalled:
        await stop_consumer(consumer)
        raise
    except BaseException:  # our own task cancelled: no start left running behind it
        await stop_consumer(consumer)
        raise
    finally:
        stopped.cancel()
    await stop_consumer(consumer)
    return False


STOP_S = 15.0
"""How long a consumer's stop may take, every stop (a normal one, a stalled drain's, a
start given up): aiokafka's stop waits for its coordination task and a LeaveGroup with
no deadline of its own but the requests' (40 s each), so with Kafka frozen a sink or a
notifier whose loop ended (a signal, a stalled drain, an error of ours, a pipe of the
notifier restarted) waited until the broker came back, and a stall or an error stopped
before the process's stop deadline had even begun. Past it the consumer's requests are
cancelled and its connections closed; no LeaveGroup is sent, so the group drops the
member after its session timeout, as after a crash. A healthy broker answers a
LeaveGroup in milliseconds, but a stop that begins during a rebalance first ends it:
aiokafka's coordination task does not look at the stop then, so the revoke listener
runs and the JoinGroup may be held for the group's rebalance timeout (aiokafka's
default, the session timeout: 10 s). 15 s leaves that 5 s of margin: cut at 10 s, a
healthy stop lost its LeaveGroup and its partitions stayed idle for a session more."""


async def stop_consumer(consumer: AIOKafkaConsumer, *, within_s: float | None = None) -> None:
    """`consumer.stop()`, also when aiokafka's own close raises `CancelledError`.

    With the broker gone, aiokafka's `Fetcher.close` cancels its fetch requests and
    then awaits each of them without catching the cancellation it caused, so the
    stop raised `CancelledError` and the sink or the notifier, stopped by a signal
    during an outage, exited 1 with a traceback. A cancel of our task made since this
    call began is handed on (also one aiokafka swallowed: `schemas.deadline`); any
    other `CancelledError` is aiokafka's, finished here: the fetches left are
    cancelled and awaited, and the client (the sockets) closed as `stop` would have.
    "Since this call began": called in the clean-up of a task being cancelled already
    (`start_consumer`, the sink's and the notifier's `finally`, the warm-up's), the
    old request is not ours to hand on, and aiokafka's error was taken for it and the
    client left open. A stop that takes longer than `within_s` (None: `STOP_S`) is
    given up the same way (its client closed, `kafka_consumer_stop_cut` logged), and
    so is a stop our own cancel cut short, before the cancel is handed on.
    """
    limit = STOP_S if within_s is None else within_s
    baseline = cancel_requests()
    try:
        async with deadline(limit):
            await consumer.stop()
    except TimeoutError:
        log.warning(
            "kafka_consumer_stop_cut",
            after_s=limit,
            hint="Kafka did not answer the consumer's stop; its group drops it after the "
            "session timeout",
        )
        await _close_anyway(consumer)
    except asyncio.CancelledError:
        await _close_anyway(consumer)  # ours too: the consumer is marked closed already
        if cancelled_since(baseline):
            raise


_COORDINATOR_ROUTINES = (
    "_coordination_task",
    "_heartbeat_task",
    "_commit_refresh_task",
    "_reset_committed_task",  # a consumer without a group
)
"""aiokafka's coordinator routines that its `stop` ends (`GroupCoordinator.close`)."""


async def _close_anyway(consumer: AIOKafkaConsumer) -> None:
    """What a `stop` cut short left running: the coordinator's routines (a group
    member's heartbeat and commit refresh), the fetch routine and its requests are
    cancelled and awaited, and the client closed (its metadata routine, its sockets).

    aiokafka marks the consumer closed as its `stop` begins, so a stop cut by a cancel
    of our task is never run again: its routines ran on until the loop closed them. A
    group member's heartbeat then logged an error up to ten times a second, or (its
    client's connection opened again) kept the member alive in its group, holding its
    partitions from every other member for as long as the process lived. No LeaveGroup
    is sent (the stop was given up): the group drops the member after its session
    timeout, as after a crash."""
    coordinator = getattr(consumer, "_coordinator", None)
    fetcher = getattr(consumer, "_fetcher", None)
    routines = [getattr(coordinator, name, None) for name in _COORDINATOR_ROUTINES]
    routines.append(getattr(fetcher, "_fetch_task", None))
    running = [task for task in routines if task is not None]
    running.extend(getattr(fetcher, "_pending_tasks", ()))
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await consumer._client.close()


async def consume(
    consumer: AIOKafkaConsumer,
    topics: Collection[str],
    batches: Batches,
    stop: asyncio.Event,
    *,
    drain: bool = False,
    waits: KafkaWaits | None = None,
) -> None:
    """Fetch and hand over until `stop` is set (or, with `drain`, until caught up).

    Draining, no progress for `waits.stall_s` - no assignment of every topic, no records
    while behind the end offsets with nothing paused, no answer - is `KafkaStalled`.
    """
    waits = waits or KafkaWaits(drain=drain)
    targets: dict[TopicPartition, int] | None = None
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            batch = await _fetch(
                consumer, max(1, batches.fetch_limit(consumer)), stopped, waits, drain=drain
            )
            if batch is None:
                return
            with waits.ours():
                for tp, records in batch.items():
                    if tp not in consumer.assignment():
                        continue  # fetched before a rebalance took the partition away
                    await batches.handle(tp, records)
            if drain and (any(batch.values()) or consumer.paused()):
                waits.progress()  # records, or the handler holds back: not Kafka's wait
            with waits.ours():
                await batches.after_batch(consumer)
            if drain:
                assigned = consumer.assignment()
                if {tp.topic for tp in assigned} != set(topics):
                    waits.check("no assignment of every topic")
                    continue  # not every topic assigned yet
                if targets is None or set(targets) != assigned:
                    targets = await _end_offsets(consumer, assigned, stopped, waits)
                    if targets is None:
                        continue
                done = await caught_up(consumer, targets, stopped, waits)
                if done is None:
                    return
                if done:
                    waits.progress()  # all read: what is left is the handler's
                    if batches.idle():
                        return
                else:
                    waits.check("no records while behind its end offsets")
    finally:
        stopped.cancel()


async def _fetch(
    consumer: AIOKafkaConsumer,
    limit: int,
    stopped: asyncio.Future[Any],
    waits: KafkaWaits,
    *,
    drain: bool,
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] | None:
    """One `getmany`, or None when `stopped` comes first.

    aiokafka's `getmany` ignores its timeout while the group rebalances (it waits for
    the assignment), and with the broker gone the rebalance never ends: a sink or a
    notifier stopped during an outage waited for ever, and a drain never ended (now
    `waits` ends it). What a cancelled fetch had read is read again after the restart
    (nothing of it was committed). Draining, an empty answer is no progress.
    """
    fetched, batch = await waits.within(
        consumer.getmany(timeout_ms=POLL_MS, max_records=limit),
        stopped,
        "no assignment (a rebalance that does not end)",
        answer_is_progress=not drain,
    )
    return batch if fetched else None


async def _end_offsets(
    consumer: AIOKafkaConsumer,
    assigned: Collection[TopicPartition],
    stopped: asyncio.Future[Any],
    waits: KafkaWaits,
) -> dict[TopicPartition, int] | None:
    """The end offsets of `assigned`, or None (asked again next turn) when aiokafka gave
    up (`KafkaTimeoutError` after its `request_timeout_ms`) or `stopped` came first."""
    try:
        answered, ends = await waits.within(
            consumer.end_offsets(list(assigned)), stopped, "no end offsets"
        )
    except KafkaError:
        waits.check("no end offsets")
        return None
    return ends if answered else None


async def caught_up(
    consumer: AIOKafkaConsumer,
    targets: dict[TopicPartition, int],
    stopped: asyncio.Future[Any],
    waits: KafkaWaits,
) -> bool | None:
    """Whether the position of every partition reached its target (None: `stopped` came
    first). aiokafka's `position` waits, without a deadline, for a position it has to
    ask the broker for (after an assignment or a reset): through `waits`."""
    for tp, end in targets.items():
        answered, position = await waits.within(
            consumer.position(tp),
            stopped,
            f"no position of {tp.topic}[{tp.partition}]",
            answer_is_progress=False,  # mostly known without asking: no sign of Kafka
        )
        if not answered:
            return None
        if int(position) < end:  # type: ignore[arg-type]
            return False
    return True
