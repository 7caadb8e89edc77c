"""A drain that Kafka leaves waiting ends in one line; a long-running loop says it waits.

aiokafka waits on Kafka without a deadline when a subscribed consumer starts, when a
fetch meets a rebalance, for a position and for a committed offset: `sink --drain`
with the broker frozen ran on for minutes logging only aiokafka's own lines, then
ended "ok" with nothing stored. The consumers here are stand-ins that wait the way
aiokafka's do; the stall deadline is a parameter, a fraction of a second.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from log_lines import Lines

from sinks import consumer as consumer_module
from sinks.clickhouse.sink import ClickHouseSink, StopRequested
from sinks.consumer import KafkaStalled, KafkaWaits, consume, start_consumer

TP = TopicPartition("t", 0)
KAFKA = "Kafka at 127.0.0.1:1"


def _forever() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


class StandIn:
    """Assigned `TP` (unless `assigned` is empty); each call waits for ever when named
    in `hangs`, else answers at once: no records, end offset 10, position 5."""

    def __init__(self, *hangs: str, assigned: bool = True, paused: bool = False) -> None:
        self.hangs = set(hangs)
        self._assigned = {TP} if assigned else set()
        self._paused = {TP} if paused else set()
        self.stopped = 0
        self.end_offset_calls = 0

    async def _maybe_hang(self, name: str) -> None:
        if name in self.hangs:
            await _forever()

    async def start(self) -> None:
        await self._maybe_hang("start")

    async def getmany(self, **_: Any) -> dict[Any, Any]:
        await self._maybe_hang("getmany")
        await asyncio.sleep(0.005)  # aiokafka's poll: an empty answer after its timeout
        return {}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.end_offset_calls += 1
        if "end_offsets" in self.hangs:
            raise KafkaTimeoutError  # aiokafka gives up after request_timeout_ms
        return dict.fromkeys(tps, 10)

    async def position(self, _tp: TopicPartition) -> int:
        await self._maybe_hang("position")
        return 5

    async def committed(self, _tp: TopicPartition) -> int | None:
        await self._maybe_hang("committed")
        return None

    async def stop(self) -> None:
        self.stopped += 1

    def subscribe(self, _topics: list[str], **_: Any) -> None:
        pass

    def pause(self, *_tps: TopicPartition) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)


class Handler:
    def __init__(self, *, idle: bool = True) -> None:
        self._idle = idle

    def fetch_limit(self, _consumer: Any) -> int:
        return 10

    async def handle(self, _tp: Any, _records: Any) -> None:
        raise AssertionError("nothing was fetched")

    async def after_batch(self, _consumer: Any) -> None:
        pass

    def idle(self) -> bool:
        return self._idle


def _outcome(coro: Any) -> tuple[Any, float]:
    """What `coro` returned or raised, and how long it took (the test fails past 5 s)."""

    async def main() -> tuple[Any, float]:
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(coro, 5)
        except (KafkaStalled, StopRequested) as exc:
            result = exc
        return result, time.monotonic() - started

    return asyncio.run(main())


def _stall_line(exc: object, what: str) -> None:
    assert isinstance(exc, KafkaStalled), exc
    text = str(exc)
    assert "\n" not in text
    assert text.startswith(f"{KAFKA} gave {what} for ")
    assert "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS" in text


async def _drain_start(consumer: Any) -> bool:
    """A drain's start, with a stall deadline of 0.2 s."""
    waits = KafkaWaits(KAFKA, drain=True, stall_s=0.2)
    return await start_consumer(consumer, asyncio.Event(), waits)


def test_a_drain_whose_start_waits_for_an_assignment_ends_in_one_line() -> None:
    consumer = StandIn("start")

    outcome, took = _outcome(_drain_start(consumer))
    _stall_line(outcome, "no assignment")
    assert took < 2
    assert consumer.stopped == 1  # left closed, not half started


@pytest.mark.parametrize(
    ("consumer", "what"),
    [
        (StandIn("getmany"), "no assignment (a rebalance that does not end)"),
        (StandIn(assigned=False), "no assignment of every topic"),
        (StandIn(), "no records while behind its end offsets"),
        (StandIn("position"), "no position of t[0]"),
        (StandIn("end_offsets"), "no end offsets"),
    ],
    ids=["fetch-in-a-rebalance", "not-assigned", "behind-no-records", "position", "end-offsets"],
)
def test_a_drain_that_kafka_leaves_waiting_ends_in_one_line(consumer: StandIn, what: str) -> None:
    async def run() -> None:
        waits = KafkaWaits(KAFKA, drain=True, stall_s=0.2)
        await consume(consumer, ["t"], Handler(), asyncio.Event(), drain=True, waits=waits)  # type: ignore[arg-type]

    outcome, took = _outcome(run())
    _stall_line(outcome, what)
    assert took < 2


@pytest.mark.parametrize(
    ("consumer", "handler"),
    [(StandIn(paused=True), Handler()), (StandIn("caught-up"), Handler(idle=False))],
    ids=["paused-by-the-handler", "caught-up-handler-busy"],
)
def test_a_drain_that_waits_on_its_handler_is_not_stalled(
    consumer: StandIn, handler: Handler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink paused by a ClickHouse outage, the notifier delivering what it read."""
    if "caught-up" in consumer.hangs:
        monkeypatch.setattr(consumer, "position", _at(10))

    async def run() -> str:
        stop = asyncio.Event()
        waits = KafkaWaits(KAFKA, drain=True, stall_s=0.1)
        asyncio.get_running_loop().call_later(0.5, stop.set)
        await consume(consumer, ["t"], handler, stop, drain=True, waits=waits)  # type: ignore[arg-type]
        return "stopped"

    outcome, _took = _outcome(run())
    assert outcome == "stopped"


def _at(offset: int) -> Any:
    async def position(_tp: TopicPartition) -> int:
        return offset

    return position


def test_a_long_running_loop_goes_on_waiting_for_kafka_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = Lines()
    monkeypatch.setattr(consumer_module, "log", lines)
    consumer = StandIn("getmany")

    async def run() -> str:
        stop = asyncio.Event()
        waits = KafkaWaits(KAFKA, stall_s=0.1)
        asyncio.get_running_loop().call_later(0.45, stop.set)
        await consume(consumer, ["t"], Handler(), stop, waits=waits)  # type: ignore[arg-type]
        return "stopped"

    outcome, _took = _outcome(run())
    assert outcome == "stopped"
    waiting = lines.named("kafka_waiting")
    assert len(waiting) >= 3
    assert {line["kafka"] for line in waiting} == {KAFKA}
    assert waiting[0]["waiting_for"] == "no assignment (a rebalance that does not end)"
    assert waiting[-1]["waited_s"] >= 0.3  # since the wait began, not since the last line


def test_the_wait_over_is_said_once_kafka_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = Lines()
    monkeypatch.setattr(consumer_module, "log", lines)

    async def run() -> None:
        waits = KafkaWaits(KAFKA, stall_s=0.1)
        late: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.25, late.set_result, 1)
        await waits.within(late, _forever(), "no answer")

    asyncio.run(run())
    events = [line["event"] for line in lines.lines]
    # one warning per 0.1 s stalled (how many fit in 0.25 s depends on the machine's load),
    # then the answer said once, last
    assert events[-1] == "kafka_waiting_over", events
    assert set(events[:-1]) == {"kafka_waiting"}, events


def _sink(consumer: StandIn, stop: asyncio.Event, *, drain: bool) -> ClickHouseSink:
    sink = ClickHouseSink(bootstrap="127.0.0.1:1", group_id="g", client=None, mappers={})  # type: ignore[arg-type]
    sink._consumer = consumer  # type: ignore[assignment]
    sink._stop = stop
    sink._waits = KafkaWaits(KAFKA, drain=drain, stall_s=0.2)
    return sink


def test_the_sink_waiting_for_a_committed_offset_stops_when_told() -> None:
    """The skip-set of a new partition starts at the group's committed offset, which
    aiokafka asks for until a coordinator answers: `handle` waited for ever, deaf to a
    stop. Nothing of the partition is buffered without it."""

    async def run() -> None:
        stop = asyncio.Event()
        sink = _sink(StandIn("committed"), stop, drain=False)
        asyncio.get_running_loop().call_later(0.3, stop.set)
        await sink.load_stored_offsets([TP])

    outcome, took = _outcome(run())
    assert isinstance(outcome, StopRequested), outcome
    assert 0.3 <= took < 2


def test_a_draining_sink_waiting_for_a_committed_offset_ends_in_one_line() -> None:
    async def run() -> None:
        sink = _sink(StandIn("committed"), asyncio.Event(), drain=True)
        await sink.load_stored_offsets([TP])

    outcome, took = _outcome(run())
    _stall_line(outcome, "no committed offset of t[0]")
    assert took < 2


def test_a_draining_sink_waiting_for_a_committed_offset_in_its_handler_ends_in_one_line() -> None:
    """`consume` runs the handler (which asks for the committed offset) as our own work
    (`ours`): the wait on Kafka inside it never stalled, and the drain waited for ever."""

    async def run() -> None:
        sink = _sink(StandIn("committed"), asyncio.Event(), drain=True)
        with sink._waits.ours():
            await sink.load_stored_offsets([TP])

    outcome, took = _outcome(run())
    _stall_line(outcome, "no committed offset of t[0]")
    assert took < 2


class StopWaitsForTheCoordinator(StandIn):
    """aiokafka's stop with Kafka silent: it waits for the group coordinator."""

    def __init__(self) -> None:
        super().__init__("start")
        self._client = self
        self._fetcher = self
        self._pending_tasks: set[asyncio.Task[None]] = set()
        self.client_closed = False

    async def stop(self) -> None:
        await _forever()

    async def close(self) -> None:
        self.client_closed = True


def test_a_stalled_drain_does_not_wait_for_aiokafkas_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen with the broker frozen: the drain gave up at 60 s, then its consumer's stop
    held the process until a request of aiokafka's timed out, 80 s later."""
    monkeypatch.setattr(consumer_module, "STOP_S", 0.2)
    consumer = StopWaitsForTheCoordinator()

    outcome, took = _outcome(_drain_start(consumer))
    _stall_line(outcome, "no assignment")
    assert took < 2
    assert consumer.client_closed


class StopWaitsAfterRunning(StopWaitsForTheCoordinator):
    """A consumer that starts and fetches (nothing), then, stopped, waits for a
    coordinator that a frozen broker never lets answer."""

    def __init__(self) -> None:
        super().__init__()
        self.hangs = set()

    def subscribe(self, _topics: list[str], **_: Any) -> None:
        pass


async def _sink_stopped(consumer: Any) -> Any:
    sink = ClickHouseSink(bootstrap="127.0.0.1:1", group_id="g", client=None, mappers={})  # type: ignore[arg-type]
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    return await sink.run(stop)


async def _pipe_stopped(consumer: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from webhook_pipes import LogProducer, offline_pipe

    from sinks.webhooks import dispatcher

    pipe = offline_pipe("stopped")
    pipe.producer = LogProducer()  # type: ignore[assignment]
    monkeypatch.setattr(dispatcher, "new_consumer", lambda *_a, **_k: consumer)
    monkeypatch.setattr(pipe, "commit", _no_commit)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    return await pipe.run(stop)


async def _start_stopped(consumer: Any) -> Any:
    consumer.hangs = {"start"}  # a start that waits for its assignment, then a stop
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    return await start_consumer(consumer, stop)


@pytest.mark.parametrize("path", ["sink", "notifier", "start"])
def test_a_stop_on_a_frozen_broker_ends_by_its_deadline(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every consumer stop has a deadline, not only a stalled drain's: a sink or a
    notifier told to stop (or whose loop ended on an error of ours, before the process's
    stop deadline begins) waited in aiokafka's stop for as long as Kafka was frozen."""
    from sinks.clickhouse import sink as sink_module

    lines = Lines()
    monkeypatch.setattr(consumer_module, "log", lines)
    monkeypatch.setattr(consumer_module, "STOP_S", 0.2)
    consumer = StopWaitsAfterRunning()
    monkeypatch.setattr(sink_module, "new_consumer", lambda *_a, **_k: consumer)
    run = {
        "sink": lambda: _sink_stopped(consumer),
        "notifier": lambda: _pipe_stopped(consumer, monkeypatch),
        "start": lambda: _start_stopped(consumer),
    }[path]

    outcome, took = _outcome(run())
    assert not isinstance(outcome, BaseException), outcome
    assert took < 2
    assert consumer.client_closed
    assert [line["event"] for line in lines.lines if line["level"] == "warning"] == [
        "kafka_consumer_stop_cut"
    ]


def test_notify_drain_goes_through_the_same_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """`chainwatch notify --drain` reads through the same loop: a fetch that waits for a
    rebalance ends its endpoint's pipeline in the same line."""
    from webhook_pipes import LogProducer, offline_pipe

    from sinks.webhooks import dispatcher

    pipe = offline_pipe("stalled")
    pipe.producer = LogProducer()  # type: ignore[assignment]
    consumer = StandIn("getmany")
    monkeypatch.setattr(dispatcher, "new_consumer", lambda *_a, **_k: consumer)
    monkeypatch.setattr(consumer_module, "STALL_S", 0.2)
    monkeypatch.setattr(pipe, "commit", _no_commit)

    outcome, took = _outcome(pipe.run(asyncio.Event(), drain=True))
    assert isinstance(outcome, KafkaStalled), outcome
    assert str(outcome).startswith(f"Kafka at {pipe.config.bootstrap} gave no assignment")
    assert took < 2


async def _no_commit(_consumer: Any) -> None:
    pass


class _SlowFlush(Handler):
    """A sink whose flush takes longer than the stall deadline (a slow insert)."""

    def __init__(self, flush_s: float) -> None:
        super().__init__(idle=False)
        self.flush_s = flush_s
        self.flushes = 0

    async def after_batch(self, _consumer: Any) -> None:
        self.flushes += 1
        if self.flushes == 2:
            await asyncio.sleep(self.flush_s)

    def idle(self) -> bool:
        return self.flushes >= 4


def test_a_drain_busy_with_its_own_flush_is_not_taken_for_a_stalled_kafka() -> None:
    """Kafka answered every call in milliseconds, but the stall clock counted the
    handler's flush: the first empty fetch after it ended a healthy drain."""
    consumer = StandIn()
    positions = iter([5, 5, 5])  # behind for three turns (the records on their way)

    async def position(_tp: TopicPartition) -> int:
        return next(positions, 10)

    consumer.position = position  # type: ignore[method-assign]

    async def run() -> None:
        waits = KafkaWaits(KAFKA, drain=True, stall_s=0.2)
        handler = _SlowFlush(0.5)
        await consume(consumer, ["t"], handler, asyncio.Event(), drain=True, waits=waits)  # type: ignore[arg-type]

    outcome, _took = _outcome(run())
    assert outcome is None  # drained, not KafkaStalled


def test_our_work_inside_a_kafka_wait_does_not_stall_it() -> None:
    """A rebalance listener's flush runs inside the fetch's wait (aiokafka calls it from
    `getmany`): a revocation flush longer than the stall deadline ended the drain."""

    async def run() -> Any:
        waits = KafkaWaits(KAFKA, drain=True, stall_s=0.2)

        async def fetch_with_a_slow_listener() -> str:
            with waits.ours():
                await asyncio.sleep(0.5)  # the listener flushes to ClickHouse
            return "fetched"

        return await waits.within(fetch_with_a_slow_listener(), _forever(), "no assignment")

    outcome, _took = _outcome(run())
    assert outcome == (True, "fetched")
