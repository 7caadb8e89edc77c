"""`chainwatch replay`: a scenario through the real engine on fresh topics.

Publishes the file to a fresh set of topics (unique prefix and app id) in
event-time windows, each drained by the N event-time workers before the next
(`chainwatch.replay_windows` says why), waits until the engine's consumer group has committed the
end of every topic it reads, sends the final clock `T` to every partition,
waits again, and prints the latest state of every alert (retracted ones left
out) as NDJSON sorted by `alert_id`. Progress and the dead-letter count go to
stderr. Completion is detected from committed offsets (faust flushes its
producer before committing), never from a fixed sleep.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import MessageSizeTooLargeError
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from chainwatch.acked_sends import AckedSends, kafka_failed
from chainwatch.errors import USER_ERRORS, Interrupted, UserError
from chainwatch.free_port import free_port
from chainwatch.kafka_admin import (
    admin_call_timeout_s,
    bounded,
    close_admin,
    ensure_topics,
    settings_admin_client,
)
from chainwatch.lifeline import start_child
from chainwatch.long_lines import MAX_LINE_BYTES, LongLine, binary_lines
from chainwatch.process_cpu import ProcessUse, Use
from chainwatch.replay_records import Refused, outgoing
from chainwatch.replay_runs import RunGroupKept, delete_stopped_run, replay_settings
from chainwatch.replay_windows import EventTimeWindows, window_ms
from chainwatch.settings import Settings, child_environment
from chainwatch.topic_partitions import routed_topics
from schemas.dead_letter import DeadLetter, DeadLetterSource, ErrorDetail, ReasonCode
from schemas.deadline import deadline
from schemas.files import not_a_file
from schemas.json_blank import json_blank
from schemas.kafka_security import aiokafka_kwargs
from schemas.kafka_size import MAX_REQUEST_BYTES
from schemas.plan import load_plan
from schemas.validation import (
    RecordRejected,
    decode_replay_line,
)
from sinks.daemon_executor import to_daemon_thread
from sinks.producer_start import start_producer, stop_producer
from sinks.topic_read import read_to_end
from streams.engine.messages import ORDER_INBOX, Tick, encode_bundle
from streams.rules.facts import to_ms
from streams.settings import KafkaSettings
from streams.topics import (
    ALERTS,
    CUSTOMERS,
    DEAD_LETTER,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    TopicNames,
)


class Progress(Protocol):
    """Where a replay reports what it does; `done`/`total` when the step is countable."""

    def __call__(
        self, message: str, /, *, done: int | None = None, total: int | None = None
    ) -> None:
        """Report `message`; a front end may draw `done` of `total` as a bar."""


def no_progress(message: str, /, *, done: int | None = None, total: int | None = None) -> None:
    """A `Progress` that says nothing (tests, benches)."""


@dataclass(frozen=True)
class ReplayResult:
    alerts: list[dict[str, Any]]
    dead_letters: int
    published: int


#: The longest scenario line parsed. Kafka takes records of up to 1 MiB; a line of
#: 8 MiB cannot hold one however much blank space it has, and parsing one of 200 MB
#: took 4.3 GB. A longer line is a dead letter read through a hash (`long_lines`).
MAX_SCENARIO_LINE_BYTES = 8 * MAX_LINE_BYTES

ScenarioLine = tuple[int, bytes | LongLine]
"""A line's number and its text (ending cut), or a `LongLine` too long to read."""


def scenario_lines(path: Path, size: int | None = None) -> Iterator[ScenarioLine]:
    """The file's non-blank lines with their numbers, each without a UTF-8 byte order
    mark at its start (Notepad and Excel write one: the first record was a `not_json`
    dead letter; `cat a.ndjson b.ndjson` puts b's mark at the start of a later line,
    and no JSON starts with one). A blank line (JSON whitespace only: `schemas.json_blank`)
    is skipped however long it is.

    With `size`, of the file's first `size` bytes: what it held when the run began
    (`ReplayRun.size`), whatever is written to it meanwhile."""
    with path.open("rb") as handle:
        for number, line in binary_lines(handle, MAX_SCENARIO_LINE_BYTES, end=size):
            if isinstance(line, LongLine):
                if not line.blank:
                    yield number, line
                continue
            line = line.removeprefix(codecs.BOM_UTF8)
            if not json_blank(line):
                yield number, line.rstrip(b"\r\n")


def scenario_size(path: Path) -> int:
    """How much of the file a run publishes: all it holds when the run begins."""
    return path.stat().st_size


UNREAD_LINE: Final = b"(a scenario line over MAX_SCENARIO_LINE_BYTES, not read)"
"""What `scenario_texts` gives for a line too long to read: no JSON, a dead letter."""


def scenario_texts(path: Path) -> Iterator[bytes]:
    """The file's lines as the replay reads them (`scenario_lines`), for the reference
    engine (`streams.rules.oracle.run_scenario`); a line too long to read is
    `UNREAD_LINE`, a dead letter there as here.

    A comparison with the oracle reads the file so, not with `splitlines()`, which kept
    the byte order mark the replay strips (the first record of a file Notepad saved was
    a dead letter for the oracle only) and split a line at a lone CR (JSON whitespace,
    no line end, to the replay)."""
    for _, line in scenario_lines(path):
        yield UNREAD_LINE if isinstance(line, LongLine) else line


def topic_blocks(lines: Iterator[ScenarioLine], order: list[str]) -> list[ScenarioLine]:
    """The same records re-interleaved: whole topics one after another, in `order`.

    Each topic keeps its own record order (which the rules depend on); only the
    interleaving across topics changes. Unparseable lines go first.
    """
    by_topic: dict[str, list[ScenarioLine]] = {}
    for number, line in lines:
        topic = ""
        if not isinstance(line, LongLine):
            with contextlib.suppress(RecordRejected):
                topic = decode_replay_line(line).topic
        by_topic.setdefault(topic, []).append((number, line))
    result = by_topic.pop("", [])
    for topic in order:
        result.extend(by_topic.pop(topic, []))
    for rest in by_topic.values():
        result.extend(rest)
    return result


#: How long Kafka may take to take one record, or to acknowledge the records sent so far:
#: the default of Kafka's own `request.timeout.ms` (30 s; aiokafka's producer waits 40 s
#: for one request, so this deadline, not aiokafka, ends a wait on a broker gone). A
#: healthy broker acknowledges a flush of 5000 records within a second, on 2 cores with
#: two CPU hogs beside it too; at 60 s a broker stopped mid-replay left the user two
#: minutes without a word, with the clean-up below.
PUBLISH_TIMEOUT_S = 30.0

FAILED_CLEANUP_S = 5.0
"""How long each clean-up step of a failed run may take (the producer's stop, the
workers' stop before they are killed, the deletion of its topics): what it would save is
thrown away (the run's topics and its workers' state are deleted), and with Kafka gone
each step waited out its own long deadline (10 s, 30 s, 15 s) after the publish's."""


class _Publisher(AckedSends):
    """The scenario's sends and their acknowledgements, each within `PUBLISH_TIMEOUT_S`.

    aiokafka's idempotent producer retries a batch for as long as Kafka is away:
    a broker that stopped mid-publish kept the replay at "publishing: 115000/300000"
    for ever, without a word. Past the deadline, when aiokafka gives up on a broker
    gone, or on Kafka's refusal, the replay stops with one line saying which; its
    topics are deleted as after any failed run.
    """

    def __init__(self, producer: AIOKafkaProducer, bootstrap: str) -> None:
        super().__init__(PUBLISH_TIMEOUT_S, producer)
        self.bootstrap = bootstrap

    def _failed(self, exc: BaseException) -> UserError:
        """One line: whether Kafka did not answer, stopped answering or refused
        (`kafka_failed`), and how far the replay came."""
        return UserError(
            f"Kafka at {self.bootstrap} {kafka_failed(exc, self.timeout_s)} "
            f"({self.acknowledged} of the scenario's records acknowledged before): "
            "the replay stopped; check that the broker answers and run it again"
        )


async def publish_scenario(
    settings: Settings,
    scenario: Path,
    progress: Progress,
    *,
    interleaving: list[str] | None = None,
    windows: EventTimeWindows | None = None,
    between_windows: Callable[[int], None] | None = None,
    size: int | None = None,
) -> tuple[int, int, int | None]:
    """Publish every line; return (published, dead letters, largest event_time in ms).

    Of the file's first `size` bytes (default: its size now), read as many times as
    the publish reads it: a file still being written to (an export, a log) kept the
    replay reading what each send's time let the writer add, for ever when it wrote as
    fast, and the count it showed ("publishing: n/total") was of another file.

    With `windows`, each time a record opens a new event-time window the records
    before it are flushed and `between_windows(number of the window closed)` runs
    (in a thread: it blocks until the engine has drained them) before it is sent.
    """
    names = TopicNames(settings.kafka.topic_prefix)
    plan = load_plan(settings.engine.plan)
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings.kafka.endpoint),
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
        max_request_size=MAX_REQUEST_BYTES,  # what `outgoing` checks before decoding
    )
    await start_producer(producer, settings.kafka.bootstrap)
    publisher = _Publisher(producer, settings.kafka.bootstrap)
    published = dead = 0
    size = scenario_size(scenario) if size is None else size  # read as the lines are
    total = sum(1 for _ in scenario_lines(scenario, size))
    largest: int | None = None
    lines: Iterable[ScenarioLine] = scenario_lines(scenario, size)
    if interleaving is not None:
        lines = topic_blocks(scenario_lines(scenario, size), interleaving)
    progress("publishing", done=0, total=total)

    async def dead_letter(
        number: int,
        raw: bytes | None,
        errors: list[ErrorDetail],
        code: ReasonCode,
        original: tuple[int, str] | None = None,
    ) -> None:
        letter = DeadLetter.build(
            raw,
            DeadLetterSource(kind="replay", file=scenario.name, line=number),
            errors,
            code,
            datetime.now().astimezone(),
            original=original,
        )
        await publisher.send(
            names(DEAD_LETTER), key=letter.dead_letter_id.encode(), value=letter.encode()
        )

    try:
        for number, line in lines:
            if isinstance(line, LongLine):
                error = ErrorDetail(
                    loc="", msg=line.describe(MAX_SCENARIO_LINE_BYTES), type="too_large"
                )
                original = (line.size, line.sha256)
                start = line.start[:MAX_LINE_BYTES]  # all a dead letter keeps of it
                await dead_letter(number, start, [error], ReasonCode.PROCESSING_ERROR, original)
                dead += 1
                continue
            try:
                replay = decode_replay_line(line)
            except RecordRejected as exc:
                await dead_letter(number, line, exc.errors, exc.reason_code)
                dead += 1
                continue
            sending = outgoing(replay, line, plan)
            if isinstance(sending, Refused):
                await dead_letter(number, line, sending.errors, sending.code)
                dead += 1
                continue
            key, value, ms = sending.key, sending.value, sending.ms
            if windows is not None and windows.starts_new(ms, crm=replay.topic == CUSTOMERS):
                await publisher.flush()
                if between_windows is not None:
                    # a daemon thread: `asyncio.run` joins its default executor's threads,
                    # so a Ctrl-C here waited until the engine had drained the window (up
                    # to the replay's timeout, with its workers stalled); the caller ends
                    # the wait (`ReplayRun.interrupted`)
                    await to_daemon_thread(
                        between_windows, windows.number, thread_name="replay-window"
                    )
            try:
                await publisher.send(names(replay.topic), key, value)
            except MessageSizeTooLargeError as exc:
                # CONTRACT v1.2: an output Kafka will not take is a processing_error, never
                # the end of the replay (one 3 MB line stopped it with a traceback)
                error = ErrorDetail(loc="", msg=f"Kafka refuses it: {exc}", type="too_large")
                await dead_letter(number, line, [error], ReasonCode.PROCESSING_ERROR)
                dead += 1
                continue
            if ms is not None:  # a record never sent moves no clock (the final one included)
                largest = ms if largest is None or ms > largest else largest
            published += 1
            if publisher.pending >= 5000:
                await publisher.flush()
                progress("publishing", done=published + dead, total=total)
        await publisher.flush()
        progress("publishing", done=published + dead, total=total)
    except BaseException:
        await stop_producer(producer, FAILED_CLEANUP_S)  # unsent batches: of a failed run
        raise
    await stop_producer(producer)
    return published, dead, largest


#: Deadline of one lag probe (two admin requests); a probe past it counts as unknown.
LAG_PROBE_TIMEOUT_S = 20.0


def probe_timeout_s(settings: Settings) -> float:
    """The deadline of one lag or group probe: `LAG_PROBE_TIMEOUT_S`, or the admin calls'
    own when `kafka.request_timeout_s` makes it longer. Held at 20 s, a probe of a slow
    cluster given a longer setting was given up on while kafka-python still waited within
    it (a replay's wait for its group failed on it)."""
    return max(LAG_PROBE_TIMEOUT_S, admin_call_timeout_s(settings.kafka.request_timeout_s))


def committed_offsets(
    admin: KafkaAdminClient, settings: Settings
) -> dict[TopicPartition, Any] | None:
    """The engine group's committed offsets, OffsetAndMetadata per partition (None: no group)."""
    group = settings.engine.app_id
    try:
        by_group = admin.list_group_offsets({group: None})
    except KafkaError:  # the group is not there yet
        return None
    committed: dict[TopicPartition, Any] = by_group.get(group, {})
    return committed


def _lag_by_partition(
    admin: KafkaAdminClient, settings: Settings
) -> dict[TopicPartition, int] | None:
    """Records the engine's group has not committed yet, per partition (None: no group yet)."""
    from kafka.admin import OffsetSpec

    # the committed offsets before the ends: `wait_until_idle` trusts one zero for it
    committed = committed_offsets(admin, settings)
    if committed is None:
        return None
    topics = routed_topics(settings)  # what the engine group reads
    # only these topics' metadata: listing every topic cost ~80 ms of CPU per
    # probe on a broker with ~1,700 topics, taken from the workers beside it
    if any(t.get("error_code") for t in admin.describe_topics(topics)):
        return None
    partitions = [TopicPartition(t, p) for t in topics for p in range(settings.kafka.partitions)]
    ends = admin.list_partition_offsets(
        dict.fromkeys(partitions, OffsetSpec.LATEST),
        timeout_ms=int(LAG_PROBE_TIMEOUT_S * 1000 / 2),
    )
    lags: dict[TopicPartition, int] = {}
    for tp in partitions:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lags[tp] = max(0, ends[tp].offset - done)
    return lags


class LagProbe:
    """Lag probes over one admin connection, for a wait that probes every `IDLE_POLL_S`.

    A connection per probe cost the replay ~9 ms of CPU per probe against ~3 ms
    for a kept one (and the broker a connection each time), taken from the
    workers beside it on a small machine: a replay waits on every event-time
    window, ten probes a second. A probe that fails or passes its deadline drops
    the connection (its call may still be running in its thread), and the next
    probe opens a new one.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: KafkaAdminClient | None = None
        self._generation = 0
        """Counts drops: a probe that outlived its deadline must not keep what it opens."""
        self._lock = threading.Lock()

    def lags(self) -> dict[TopicPartition, int] | None:
        """`_lag_by_partition` within `probe_timeout_s`; `KafkaDeadlineExceeded` past it."""
        generation = self._generation

        def probe() -> dict[TopicPartition, int] | None:
            admin = self._admin
            if admin is None:
                admin = settings_admin_client(self.settings.kafka)
                with self._lock:
                    keep = generation == self._generation
                    if keep:
                        self._admin = admin
                if not keep:  # this probe timed out while it connected: nobody waits
                    close_admin(admin)
                    return None
            return _lag_by_partition(admin, self.settings)

        try:
            return bounded(probe, timeout_s=probe_timeout_s(self.settings), what="a lag probe")
        except BaseException:
            self._drop()
            raise

    def lag(self) -> int | None:
        """Records the engine's group has not committed yet (None: group not there yet)."""
        lags = self.lags()
        return None if lags is None else sum(lags.values())

    def _drop(self) -> None:
        with self._lock:
            self._generation += 1
            admin, self._admin = self._admin, None
        if admin is not None:
            # a timed-out call may still hold it: closed from a thread of its own
            threading.Thread(target=admin.close, name="kafka-close", daemon=True).start()

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(KafkaError, OSError):  # the probes' answers stand
                close_admin(admin)

    def __enter__(self) -> LagProbe:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _stable_members(kafka: KafkaSettings, group: str) -> int:
    """Members of `group` once it is Stable (else 0)."""
    admin = settings_admin_client(kafka)
    try:
        try:
            info = admin.describe_groups([group]).get(group) or {}
        except KafkaError:
            return 0
        if info.get("error") or info.get("group_state") != "Stable":
            return 0
        return len(info.get("members") or [])
    finally:
        close_admin(admin)


def _lags(settings: Settings) -> dict[TopicPartition, int] | None:
    """One probe on a connection of its own (`LagProbe.lags`)."""
    with LagProbe(settings) as probe:
        return probe.lags()


def _lag(settings: Settings) -> int | None:
    """One probe on a connection of its own (`LagProbe.lag`)."""
    with LagProbe(settings) as probe:
        return probe.lag()


def describe_lag(settings: Settings) -> str:
    """The partitions still behind, for an error message (never raises)."""
    try:
        lags = _lags(settings)
    except Exception as exc:  # a diagnostic must not hide the error it explains
        return f"lag unknown ({exc})"
    if lags is None:
        return "the engine's consumer group has not committed yet"
    behind = [f"{tp.topic}[{tp.partition}]={n}" for tp, n in sorted(lags.items()) if n]
    return "behind: " + (", ".join(behind[:12]) if behind else "nothing")


#: Lag above zero and unchanged this long, with every worker alive, is a stuck group.
STALL_AFTER_S = 45.0
IDLE_POLL_S = 0.1
"""How often `wait_until_idle` probes the lag: a replay drains each event-time window,
so its end is waited for once per window (a probe costs a few ms of CPU)."""
#: Restarts of stuck workers one wait allows before it gives up with an error.
MAX_STALL_RESTARTS = 3
WORKING_RUNNABLE_SHARE = 0.6
"""The share of the stall window a worker's main thread (its event loop) must have been
on a CPU or waiting for one for the watchdog to take it as working, not stuck
(`wait_until_idle`, `chainwatch.process_cpu`). A loop in a step never sleeps, so it is
runnable whatever CPU it gets: replay workers on a backlog read 93-102 % per 5 s window
beside twelve and twenty-four CPU hogs on 2 cores (once 82 %) while they got 4-10 % of
a core, and a CPU burner 99.7-100 % from none to thirty-six hogs. An idle loop sleeps
between its timers, but each wake-up waits its turn for a CPU, so its share grows with
the load: idle workers (1-3 % of a core) read 2-6 % alone and 10-40 % beside twelve to
thirty-six hogs (2-core VM shared with other runs, 20 s windows). 60 % is about the
middle of that gap. A stuck worker whose timers use more than an idle one's (a stalled
2-worker run read ~8 % in top, docs/scaling.md; an event loop burning 8 % of a core in
bursts read 12 % alone, 34 % beside two hogs, 55 % beside twelve, 68-75 % beside
twenty-four to thirty-six) counts as working only on a machine loaded that far beyond
its cores: the wait then ends at its deadline, with an error saying a worker kept
working."""
WORKING_CPU_SHARE = 0.05
"""The share of one core a worker must have used for the watchdog to take it as working,
only where the kernel keeps no schedstat to read the runnable share from. An idle replay
worker uses 2 % (1.8-2.4 % measured: 2-core VM, two workers on 4 partitions), one in a
step all the CPU it gets (a hog beside twelve others on 2 cores: 15 %); but a stuck
worker above it (~8 % in top, docs/scaling.md) counts as working, and a worker in a step
beside ~40 runnable processes on 2 cores as stuck."""

Restart = Callable[[], list[subprocess.Popen[bytes]]]
"""Stops the stuck workers and returns the ones started in their place."""
Busy = Callable[[], bool]
"""True while a worker is rebalancing or recovering its tables (`workers_busy`)."""

#: Deadline of one worker's `/readyz` answer.
READY_PROBE_TIMEOUT_S = 2.0
#: `/readyz` reasons of a worker that is working towards being ready, not stuck.
_BUSY_REASONS = ("starting", "rebalancing", "recovering tables")
#: How long a started worker that does not answer yet counts as starting: importing
#: and starting took 25-35 s under load (2-core VM, load 20) before it could answer.
WORKER_START_GRACE_S = 120.0


def worker_readiness(host: str, port: int) -> str:
    """What a worker's `/readyz` (`streams.engine.metrics`) says: "ready", "busy"
    (rebalancing, recovering its tables or starting), "not ready" (another reason,
    such as a stalled event loop), or "no answer" within `READY_PROBE_TIMEOUT_S`."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=READY_PROBE_TIMEOUT_S):
            return "ready"
    except urllib.error.HTTPError as exc:
        try:
            reasons = orjson.loads(exc.read()).get("reasons") or []
        except (orjson.JSONDecodeError, AttributeError, OSError):
            return "not ready"
        busy = any(str(r).startswith(_BUSY_REASONS) for r in reasons)
        return "busy" if busy else "not ready"
    except (OSError, ValueError):  # refused, timed out, not HTTP
        return "no answer"


def busiest_working(uses: list[Use], runnable_share: float, cpu_share: float) -> Use | None:
    """The busiest of the workers that count as working, each by its own measure (a
    runnable share where the kernel keeps schedstat, else a CPU share); None if none."""
    working = [u for u in uses if u.share >= (runnable_share if u.runnable else cpu_share)]
    return max(working, key=lambda u: (u.runnable, u.share), default=None)


def describe_use(use: Use) -> str:
    """What a working worker did, for the watchdog's progress line."""
    if use.runnable:
        return f"a worker's event loop was on a CPU or waiting for one {use.share:.0%} of the time"
    return f"a worker used {use.share:.0%} of a core (its CPU time: no schedstat here)"


def wait_until_idle(
    settings: Settings, workers: list[subprocess.Popen[bytes]], progress: Progress,
    timeout_s: float, *, restart: Restart | None = None, busy: Busy | None = None,
    stall_after_s: float = STALL_AFTER_S, working_runnable: float = WORKING_RUNNABLE_SHARE,
    working_cpu: float = WORKING_CPU_SHARE, cancelled: threading.Event | None = None,
) -> None:  # fmt: skip
    """Block until the group's lag is zero (workers must stay alive).

    One zero reading is enough: a probe reads the group's committed offsets
    before the topics' ends, and a worker commits an input only after every
    output of its step is acknowledged (join messages to the internal topics
    included) and after every derivation it owed is made (`OrderAgents.settle`).
    So ends equal to offsets committed before them mean that every record there
    was is committed, nothing was written since, and nothing is left to do: an
    event-clock worker only acts on a record. (It asked for two readings 0.1 s
    apart, which cost each event-time window of a replay 0.1 s.)

    Every probe has its own deadline; a probe that fails or times out counts as
    "not idle yet" and is reported, and the whole wait ends at `timeout_s` with
    a clear error, so a replay can never hang on an unresponsive broker. Once
    `cancelled` is set the wait raises `Interrupted` at its next turn (a window's
    wait left on its thread by a Ctrl-C: it restarts no worker and reports
    nothing while the run is cleaned up).

    A group whose lag stays above zero and unchanged for `stall_after_s` while
    its workers live is stuck: faust's consumer can stop committing a partition
    after a rebalance (docs/reliability.md, rebalance finding). With `restart`, the
    stuck workers are replaced; the new ones recover the tables from their
    changelogs and resume from the committed offsets, like after a crash.

    A stuck worker is idle; a worker in one long step (a large event-time window
    on a slow or loaded machine: up to `engine.replay_batch_size` records, 32,000
    by default, its outputs sent at the step's end) leaves the lag unchanged too,
    and cannot answer its `/readyz` meanwhile. So a worker whose event loop (its
    main thread) was on a CPU or waiting for one for at least `working_runnable`
    of the `stall_after_s` the lag stood still is working (`chainwatch.process_cpu`:
    nothing asked of its event loop, and a step is runnable all along whatever the
    load), and the stall is counted from then: killed, it would recover its state
    and start the same step again, on a loaded machine until `MAX_STALL_RESTARTS`
    failed the replay. A worker that spins for ever still ends at `timeout_s`, with
    an error that says the lag stood still while it kept working. Where the kernel
    keeps no schedstat, a worker that used `working_cpu` of a core is working (a
    stuck worker's timers can use that much, and a step on a very loaded machine
    less); where there is no `/proc` (macOS) nothing is measured: the watchdog
    decides from the lag and `busy` alone, as it did before.

    A group whose workers are still rebalancing or recovering their tables
    commits nothing for a while, and rightly so: with `busy` (true while any
    worker says so), the stall is counted from the last moment one was busy,
    never from before. Under load (2-core VM, load 15-25) a fresh worker took
    25-35 s to start, then recovered its tables and announced its alerts again
    for up to 50 s more: counted as a stall, that restarted the workers before
    they had finished, again and again, until the replay gave up (bench/fleet.py,
    docs/reliability.md).
    """
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    most = 0
    last_lag: int | None = None
    last_change = last_moved = time.monotonic()
    use = ProcessUse()
    use.mark(w.pid for w in workers)
    spinning = False  # the last stall counted was held off by a working worker
    restarts = 0
    with LagProbe(settings) as probe:  # one connection for the whole wait
        while time.monotonic() < deadline:
            _unless_cancelled(cancelled)
            for proc in workers:
                if proc.poll() is not None:
                    raise worker_exited(proc, settings)
            lag: int | None
            try:
                lag = probe.lag()
            except (KafkaError, *USER_ERRORS) as exc:
                _unless_cancelled(cancelled)
                progress(f"waiting for the engine: Kafka probe failed ({exc})")
                lag = None
            _unless_cancelled(cancelled)
            if lag == 0:
                if most:  # the step's last figure (a pipe shows first and last)
                    progress("waiting for the engine", done=most, total=most)
                return
            if lag != last_lag or not lag:
                last_lag, last_change = lag, time.monotonic()
                last_moved, spinning = last_change, False
                use.mark(w.pid for w in workers)
            elif restart is not None and time.monotonic() - last_change > stall_after_s:
                working = busiest_working(use.since_mark(), working_runnable, working_cpu)
                spinning = working is not None
                if working is not None:
                    still = time.monotonic() - last_moved
                    progress(
                        f"waiting for the engine: the lag has not moved for {still:.0f}s, but "
                        f"{describe_use(working)} in the last {stall_after_s:.0f}s: "
                        "a long step, not a stall"
                    )
                    last_change = time.monotonic()
                    use.mark(w.pid for w in workers)
                elif busy is not None and busy():
                    progress(
                        "waiting for the engine: a worker is rebalancing or recovering its tables"
                    )
                    last_change = time.monotonic()
                    use.mark(w.pid for w in workers)
                elif restarts >= MAX_STALL_RESTARTS:
                    raise UserError(
                        f"the engine stayed stuck after {restarts} restarts of its workers "
                        f"({describe_lag(settings)}; worker logs in {settings.log_dir})"
                    )
                else:
                    restarts += 1
                    progress(
                        f"no progress for {stall_after_s:.0f}s ({describe_lag(settings)}): "
                        f"restarting the workers ({restarts} of at most {MAX_STALL_RESTARTS})"
                    )
                    workers = restart()
                    last_change = time.monotonic()
                    use.mark(w.pid for w in workers)
            if lag is not None:
                most = max(most, lag)
                progress("waiting for the engine", done=most - lag, total=most)
            elif time.monotonic() - last_report > 2:
                progress("waiting for the engine")
                last_report = time.monotonic()
            time.sleep(IDLE_POLL_S)
    spun = (
        f"; the lag had not moved for {time.monotonic() - last_moved:.0f}s while a worker "
        "kept working: a step that long, or a worker spinning"
        if spinning
        else ""
    )
    raise UserError(
        f"the replay did not finish within {timeout_s:.0f}s ({describe_lag(settings)}{spun}; "
        f"worker logs in {settings.log_dir})"
    )


def _unless_cancelled(cancelled: threading.Event | None) -> None:
    if cancelled is not None and cancelled.is_set():
        raise Interrupted("the wait for the engine was interrupted")


#: How long Kafka may take to acknowledge the final clock of one partition.
FINAL_CLOCK_TIMEOUT_S = 60.0


async def send_final_clock(settings: Settings, t_ms: int) -> None:
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings.kafka.endpoint), acks="all", enable_idempotence=True
    )
    await start_producer(producer, settings.kafka.bootstrap)
    try:
        topic = f"{settings.engine.app_id}-{ORDER_INBOX}"
        for partition in range(settings.kafka.partitions):
            try:
                async with deadline(FINAL_CLOCK_TIMEOUT_S):
                    await producer.send_and_wait(
                        topic, value=encode_bundle([Tick(t_ms).encode()]), partition=partition
                    )
            # aiokafka's errors: kafka-python's `KafkaError` alone let them out as an
            # "internal error"
            except (AIOKafkaError, TimeoutError) as exc:
                raise UserError(
                    f"Kafka at {settings.kafka.bootstrap} did not acknowledge the final clock "
                    f"on {topic}[{partition}] within {FINAL_CLOCK_TIMEOUT_S:g} s "
                    f"({type(exc).__name__}); check that the broker answers"
                ) from None
    finally:
        await stop_producer(producer)


#: How long reading a result topic may go without any progress before it is an error.
READ_STALL_TIMEOUT_S = 60.0
#: How long the reader of a result topic may take to close (it holds no group).
READ_CLOSE_TIMEOUT_S = 10.0


async def read_topic(settings: Settings, logical: str) -> list[tuple[bytes | None, bytes | None]]:
    """The (key, value) of every record of a topic (`read_records`)."""
    return [(m.key, m.value) for m in await read_records(settings, logical)]


async def read_records(settings: Settings, logical: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic, in partition order, read from the beginning to the end
    (`sinks.topic_read`): within `READ_STALL_TIMEOUT_S` of no progress, the
    reader's close within `READ_CLOSE_TIMEOUT_S`."""
    topic = TopicNames(settings.kafka.topic_prefix)(logical)
    return await read_to_end(
        settings.kafka.endpoint, topic, settings.kafka.partitions,
        stall_s=READ_STALL_TIMEOUT_S, close_s=READ_CLOSE_TIMEOUT_S,
        isolation_level="read_uncommitted",
    )  # fmt: skip


def final_alerts(records: list[tuple[bytes | None, bytes | None]]) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for _key, value in records:
        if value is None:
            continue
        alert = orjson.loads(value)
        latest[alert["alert_id"]] = alert
    return [latest[k] for k in sorted(latest) if latest[k]["status"] != "retracted"]


def worker_exited(proc: subprocess.Popen[bytes], settings: Settings) -> UserError:
    """A replay worker that ended on its own (a crash: a commit that timed out, say)."""
    return UserError(
        f"a replay worker (pid {proc.pid}) exited with code {proc.returncode}; its log, in "
        f"{settings.log_dir}, says why (look for drained_commit_timed_out or a traceback)"
    )


def worker_log(settings: Settings, n: int) -> Path:
    """Where worker `n` of `start_workers` writes its log."""
    return settings.log_dir / f"{settings.engine.app_id}-worker{n}.log"


def start_workers(
    settings: Settings, count: int, *, first: int = 0, ops_ports: dict[int, int] | None = None
) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes; with `ops_ports`, each serves its ops endpoints on a free
    port, recorded there by process id (the replay reads their `/readyz`). Each stops by
    itself once this process has died, even by SIGKILL (`chainwatch.lifeline`): it would
    have kept the run's consumer group, and the run, alive."""
    env = child_environment(settings, os.environ)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    workers = []
    for n in range(first, first + count):
        worker_env = {**env, "CHAINWATCH_DATA_DIR": str(settings.data_path / f"worker{n}")}
        port = free_port(settings.metrics_host) if ops_ports is not None else None
        if port is not None:
            worker_env["CHAINWATCH_ENGINE__METRICS_PORT"] = str(port)
        with open(worker_log(settings, n), "ab") as log:
            workers.append(start_child(["worker"], env=worker_env, log_file=log))
        if ops_ports is not None and port is not None:
            ops_ports[workers[-1].pid] = port
    return workers


WORKERS_STOP_GRACE_S = 30.0
"""How long the workers get, together, to stop after SIGTERM before they are killed."""


def stop_workers(
    workers: list[subprocess.Popen[bytes]], grace_s: float = WORKERS_STOP_GRACE_S
) -> None:
    """SIGTERM every child still running, wait up to `grace_s` for them all, then SIGKILL."""
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    ends = time.monotonic() + grace_s
    for proc in workers:
        try:
            proc.wait(timeout=max(0.0, ends - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ReplayRun:
    """One replay, step by step (the tests drive the steps to kill workers in between)."""

    def __init__(
        self,
        settings: Settings,
        scenario: Path,
        *,
        partitions: int,
        progress: Progress,
        size: int | None = None,
    ):
        why = not_a_file(scenario)
        if why is not None:
            raise UserError(f"scenario {scenario}: {why}")
        self.scenario = scenario
        self.size = scenario_size(scenario) if size is None else size
        """The bytes of the file the run publishes: what it held when the run began
        (`chainwatch backtest` gives every plan's run the same)."""
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:10]
        """Names the run's topics and consumer group (and a stored replay by default)."""
        self.settings = replay_settings(settings, partitions=partitions, run_id=self.run_id)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.largest: int | None = None
        self.published = 0
        self.ops_ports: dict[int, int] = {}
        """Each worker's ops port by process id (`workers_busy`)."""
        self.started_at: dict[int, float] = {}
        """When each worker was started, by process id (`workers_busy`)."""
        self.stall_restarts = 0
        """Times stuck workers were replaced (`wait_until_idle`); reported with the results."""
        self.started = time.monotonic()
        self.interrupted = threading.Event()
        """Set when a publish ends in an error or a Ctrl-C: a window's wait for the engine
        still running on its thread (`publish_scenario`) ends at its next turn."""

    def publish(
        self,
        interleaving: list[str] | None = None,
        *,
        part: Path | None = None,
        timeout_s: float = 1800,
        on_window: Callable[[int], None] | None = None,
    ) -> None:
        """Publish the scenario, or one `part` of it (a test publishes a file in halves).

        With workers running, the file goes out in event-time windows and the
        engine drains each (within `timeout_s`) before the next is sent
        (`chainwatch.replay_windows` says why); `on_window(n)` runs when window
        `n` has been sent, before that wait (the fleet bench kills a worker there).
        Without workers (a bench timing the engine on a full backlog) it all goes
        out at once.
        """
        run = self.settings
        self.prepare_topics()
        paced = any(w.poll() is None for w in self.workers)

        def between(number: int) -> None:
            if on_window is not None:
                on_window(number)
            self.progress(f"published event-time window {number}: waiting for the engine")
            self.wait_idle(timeout_s)

        try:
            published, dead, largest = asyncio.run(
                publish_scenario(
                    run,
                    part or self.scenario,
                    self.progress,
                    interleaving=interleaving,
                    windows=EventTimeWindows(window_ms(run.engine.limits())) if paced else None,
                    between_windows=between if paced else None,
                    size=None if part else self.size,
                )
            )
        except BaseException:
            self.interrupted.set()
            raise
        self.published += published
        if largest is not None and (self.largest is None or largest > self.largest):
            self.largest = largest
        elapsed = time.monotonic() - self.started
        self.progress(f"published {self.published} records ({dead} bad lines) in {elapsed:.1f}s")

    def prepare_topics(self) -> None:
        """The run's input and output topics (idempotent)."""
        run = self.settings
        ensure_topics(
            run.kafka.endpoint,
            TopicNames(run.kafka.topic_prefix),
            (*INPUT_TOPICS, *OUTPUT_TOPICS),
            request_timeout_s=run.kafka.request_timeout_s,
            partitions=run.kafka.partitions,
            replication_factor=run.kafka.replication_factor,
            topic_configs=run.kafka.topic_configs(),
        )

    def start_workers(self, count: int, first: int = 0) -> list[subprocess.Popen[bytes]]:
        started = start_workers(self.settings, count, first=first, ops_ports=self.ops_ports)
        self.started_at.update(dict.fromkeys((w.pid for w in started), time.monotonic()))
        self.workers.extend(started)
        return started

    def lag(self) -> int | None:
        return _lag(self.settings)

    def wait_for_group(self, members: int, timeout_s: float = 120) -> None:
        """Block until `members` workers share the group's partitions (state Stable)
        and none of them is still starting or recovering its tables (their `/readyz`).

        Workers that all join before the first record is published never
        rebalance mid-stream: faust's consumer can lose or stall records around
        a rebalance (docs/reliability.md, rebalance finding), so a replay avoids one.
        The group is Stable before its members have recovered and sought to their
        committed offsets; a first record published then meets a consumer that
        resumes fetching before it seeks (faust's recovery order), so the replay
        also waits for that. (Suspected, not proven: a clean clone's suite under two
        CPU hogs once lost the 14th record of the 2-worker replay, published within
        a second of the group turning Stable, while both workers were recovering.)
        """
        deadline = time.monotonic() + timeout_s
        group = self.settings.engine.app_id
        while time.monotonic() < deadline:
            for proc in self.workers:
                if proc.poll() is not None:
                    raise worker_exited(proc, self.settings)
            if (
                bounded(
                    lambda: _stable_members(self.settings.kafka, group),
                    timeout_s=probe_timeout_s(self.settings),
                    what="a group probe",
                )
                >= members
                and not self.workers_busy()
            ):
                return
            time.sleep(0.3)  # poll interval of the condition
        raise UserError(
            f"{members} replay workers did not join their group within {timeout_s:.0f}s"
        )

    def wait_idle(self, timeout_s: float) -> None:
        live = [w for w in self.workers if w.returncode is None]
        wait_until_idle(
            self.settings, live, self.progress, timeout_s,
            restart=self.restart_live, busy=self.workers_busy, cancelled=self.interrupted,
        )  # fmt: skip

    def workers_busy(self) -> bool:
        """Whether a live worker is starting, rebalancing or recovering its tables.

        Its `/readyz` says so; a worker that does not answer yet counts as starting
        for `WORKER_START_GRACE_S` after it was started, then as not busy.
        """
        now = time.monotonic()
        for worker in self.workers:
            port = self.ops_ports.get(worker.pid)
            if worker.poll() is not None or port is None:
                continue
            state = worker_readiness(self.settings.metrics_host, port)
            if state == "busy" or (
                state == "no answer" and now - self.started_at[worker.pid] < WORKER_START_GRACE_S
            ):
                return True
        return False

    def restart_live(self) -> list[subprocess.Popen[bytes]]:
        """Stop every live worker and start as many fresh ones (new data dirs)."""
        self.stall_restarts += 1
        live = [w for w in self.workers if w.poll() is None]
        stop_workers(live)
        return self.start_workers(len(live), first=len(self.workers))

    def finish(self, until: datetime | None, timeout_s: float) -> None:
        """Let the engine drain, move every partition's clock to the final `T`, drain again."""
        self.wait_idle(timeout_s)
        candidates = [t for t in (None if until is None else to_ms(until), self.largest) if t]
        if candidates:
            asyncio.run(send_final_clock(self.settings, max(candidates)))
            self.wait_idle(timeout_s)

    def results(self) -> ReplayResult:
        alerts = final_alerts(asyncio.run(read_topic(self.settings, ALERTS)))
        letters = asyncio.run(read_topic(self.settings, DEAD_LETTER))
        # keyed by their deterministic id: a record re-processed after a crash counts once
        dead_letters = len({key for key, _ in letters if key is not None}) + sum(
            1 for key, _ in letters if key is None
        )
        restarts = (
            f"; the workers were replaced {self.stall_restarts} time(s) after a stall "
            "(docs/reliability.md: check the results)"
            if self.stall_restarts
            else ""
        )
        self.progress(
            f"done in {time.monotonic() - self.started:.1f}s: {len(alerts)} alerts, "
            f"{dead_letters} dead letters{restarts}"
        )
        return ReplayResult(alerts, dead_letters, self.published)

    def close(self, *, keep_topics: bool = False, step_s: float | None = None) -> bool:
        """Stop the workers; unless `keep_topics`, delete the run's consumer group, its
        topics and its workers' table state (`delete_stopped_run`). The state goes even
        when the deletion fails (Kafka gone): it is on this disk, and was left behind per
        failed run. `step_s` bounds the workers' stop and each Kafka call of the deletion
        (None: their own deadlines). True when all three were deleted."""
        stop_workers(self.workers, WORKERS_STOP_GRACE_S if step_s is None else step_s)
        if keep_topics:
            # the run id is printed nowhere else: without this line the kept topics were
            # found only by listing the broker's topics or the workers' log files
            self.progress(
                f"kept the run's topics ({self.topic_patterns()}) and its workers' state "
                f"({self.settings.data_path}/worker*/faust/{self.settings.engine.app_id}); "
                f"`chainwatch runs delete {self.run_id}` deletes them"
            )
            return False
        try:
            delete_stopped_run(self.settings, step_s)
        except RunGroupKept as kept:  # a killed worker's membership: it expires by itself
            self.progress(str(kept))
            return False
        return True

    def topic_patterns(self) -> str:
        """The run's topics as the two name patterns a user deletes them by."""
        prefix, app_id = self.settings.kafka.topic_prefix, self.settings.engine.app_id
        return f"{prefix}* and {app_id}-*"

    def close_after_failure(self, *, keep_topics: bool = False) -> bool:
        """`close` while the run's own error is on its way: a clean-up that fails too
        (Kafka gone: its topics cannot be deleted) is a progress line, not the error
        the user sees (a broker stopped mid-publish was reported as "cannot reach
        Kafka" from the deletion, not as the publish that failed). Each step within
        `FAILED_CLEANUP_S`."""
        try:
            return self.close(keep_topics=keep_topics, step_s=FAILED_CLEANUP_S)
        except (*USER_ERRORS, KafkaError, OSError) as exc:
            self.progress(
                f"the run's topics ({self.topic_patterns()}) and its consumer group were not "
                f"deleted: {exc}; `chainwatch runs delete {self.run_id}` deletes them once "
                "Kafka answers"
            )
            return False


def run_replay(
    settings: Settings,
    scenario: Path,
    *,
    until: datetime | None,
    workers: int,
    partitions: int,
    progress: Progress,
    timeout_s: float = 1800,
    keep_topics: bool = False,
    on_results: Callable[[ReplayRun, ReplayResult], None] | None = None,
    size: int | None = None,
) -> ReplayResult:
    """`chainwatch replay`: publish, run `workers` processes, finish at `until`, read alerts.

    `on_results` runs with the results while the run's topics still exist
    (`chainwatch replay --sink` reads the order snapshots and dead letters there).
    `size`: how much of the file to publish (`ReplayRun.size`; default: all it holds now).
    """
    run = ReplayRun(settings, scenario, partitions=partitions, progress=progress, size=size)
    try:
        run.prepare_topics()
        run.start_workers(workers)
        run.wait_for_group(workers)
        run.publish()
        run.finish(until, timeout_s)
        stop_workers(run.workers)
        result = run.results()
        if on_results is not None:
            on_results(run, result)
    except KeyboardInterrupt:
        # Ctrl-C: the run is cleaned up as after any failure, and said so in one line
        # (it ended with exit status 130 and no word on what it left)
        if run.close_after_failure(keep_topics=keep_topics):
            left = "its topics, consumer group and worker state were deleted"
        else:
            left = f"what it left is named above (`chainwatch runs delete {run.run_id}`)"
        raise Interrupted(f"interrupted; replay run {run.run_id} stopped, {left}") from None
    except BaseException:
        run.close_after_failure(keep_topics=keep_topics)
        raise
    run.close(keep_topics=keep_topics)
    return result
