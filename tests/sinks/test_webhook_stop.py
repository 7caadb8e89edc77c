"""A notifier that stops (SIGINT, SIGTERM, a rolling restart) ends the attempts under
way and records them, and starts nothing more.

It cancelled them: a message the receiver may already have had (a Slack post) was
left without its outcome and its commit, and the next run posted it again. These
tests drive one endpoint's pipe without Kafka or HTTP; the real notifier and broker:
tests/sinks/test_webhook_delivery.py, the test of a stop in the middle of a post.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from sink_samples import make_alert
from structlog.testing import capture_logs
from webhook_pipes import FakeConsumer, LogProducer, offline_pipe, records_of

from sinks.webhooks import delivery
from sinks.webhooks.delivery import AttemptResult, DeliveryResult, RetryPolicy
from sinks.webhooks.dispatcher import EndpointPipe
from sinks.webhooks.outcomes import Job

TP = TopicPartition("cw.alerts", 0)


def _pipe(name: str) -> tuple[EndpointPipe, LogProducer]:
    pipe = offline_pipe(name)
    producer = LogProducer()
    pipe.producer = producer  # type: ignore[assignment]
    return pipe, producer


async def _read(pipe: EndpointPipe, count: int) -> None:
    alerts = [make_alert(n).model_dump_json().encode() for n in range(count)]
    await pipe.handle(TP, records_of(TP, alerts, 0))


async def _stopped(worker: asyncio.Task[None]) -> None:
    worker.cancel()  # as `run` does once `finish_in_flight` returned
    await asyncio.gather(worker, return_exceptions=True)


def _receiver_unavailable(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, list[int]]:
    """Every attempt answers 503: the event is set at the first, the list counts them."""
    failed = asyncio.Event()
    attempts: list[int] = []

    async def unavailable(*_args: Any, **_kwargs: Any) -> AttemptResult:
        attempts.append(1)
        failed.set()
        return AttemptResult(503, "HTTP 503")

    monkeypatch.setattr(delivery, "attempt", unavailable)
    return failed, attempts


def test_a_stop_lets_the_attempt_under_way_end_records_it_and_starts_no_other() -> None:
    pipe, producer = _pipe("stop-in-flight")
    posted, answered = asyncio.Event(), asyncio.Event()
    attempted: list[int] = []

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        attempted.append(job.offset)
        posted.set()
        await answered.wait()  # the receiver has the post and takes its time to answer
        return {}, DeliveryResult(delivered=True, attempts=1)

    async def run() -> None:
        await _read(pipe, 2)
        pipe._deliver = attempt  # type: ignore[method-assign]
        worker = asyncio.create_task(pipe._work(None))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(posted.wait(), 5)
            stopping = asyncio.create_task(pipe.finish_in_flight())
            done, _ = await asyncio.wait({stopping}, timeout=0.2)
            assert not done  # it waits for the answer
            answered.set()
            await asyncio.wait_for(stopping, 5)
        finally:
            await _stopped(worker)

    asyncio.run(run())
    assert attempted == [0]  # the queued one did not start
    assert pipe.stats.delivered == 1
    assert producer.sent == ["cw.webhook-deliveries"]  # its outcome, in the delivery log
    assert pipe.tracker.committable() == {TP: (1, "")}  # committed; the other is read again


def test_a_cancellation_as_the_last_attempt_under_way_ends_is_not_dropped() -> None:
    """Python 3.11's `wait_for` returned when the last attempt ended in the turn the
    stopping task was cancelled, and dropped the cancellation (gh-86296)."""
    pipe, _producer = _pipe("stop-cancelled")

    async def run() -> asyncio.Task[None]:
        pipe.in_flight = 1  # one attempt under way, as `_work` counts it
        pipe._none_in_flight.clear()
        stopping = asyncio.create_task(pipe.finish_in_flight())
        await asyncio.sleep(0)  # it waits for the attempt now
        pipe._none_in_flight.set()  # the attempt ends and the stop is cancelled, in one turn
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=5)
        return stopping

    assert asyncio.run(run()).cancelled()


def test_a_stop_leaves_a_delivery_waiting_to_retry_without_an_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its receiver never answered well: the next run delivers it, as a crash would."""
    pipe, producer = _pipe("stop-retrying")
    failed, _attempts = _receiver_unavailable(monkeypatch)

    async def run() -> None:
        await _read(pipe, 1)
        worker = asyncio.create_task(pipe._work(None))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(failed.wait(), 5)  # now waiting to retry
            await asyncio.wait_for(pipe.finish_in_flight(), 5)  # not the retry's wait
        finally:
            await _stopped(worker)

    asyncio.run(run())
    assert (pipe.stats.delivered, pipe.stats.gave_up) == (0, 0)
    assert producer.sent == []  # no outcome: neither delivered nor given up
    assert pipe.tracker.committable() == {}  # so not committed
    assert not pipe.busy


def test_an_endpoint_exports_its_series_at_zero_before_anything_happened() -> None:
    """A quiet endpoint is 0 on a dashboard or in an alert rule, not missing."""
    offline_pipe("series-at-start")
    wanted = [
        ("chainwatch_webhook_deliveries_total", {"outcome": "delivered"}),
        ("chainwatch_webhook_deliveries_total", {"outcome": "gave_up"}),
        ("chainwatch_webhook_attempts_total", {"result": "5xx"}),
        ("chainwatch_webhook_queue_depth", {}),
        ("chainwatch_webhook_oldest_pending_seconds", {}),
        ("chainwatch_webhook_delivery_seconds_count", {}),
        ("chainwatch_webhook_invalid_alerts_total", {}),
        ("chainwatch_webhook_repeats_skipped_total", {}),
        ("chainwatch_webhook_warmups_total", {"outcome": "failed"}),
    ]
    for name, labels in wanted:
        value = REGISTRY.get_sample_value(name, {"endpoint": "series-at-start", **labels})
        assert value == 0, (name, labels)
    refused = {"topic": "cw.webhook-dead-letter"}
    assert REGISTRY.get_sample_value("chainwatch_webhook_log_refused_total", refused) is not None


class _Feed(FakeConsumer):
    """The endpoint's consumer: `records` at the first fetch, then nothing."""

    def __init__(self, records: list[Any]) -> None:
        super().__init__([TP])
        self.records = records

    def subscribe(self, topics: Any, listener: Any) -> None:
        return None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        if self.records:
            records, self.records = self.records, []
            return {TP: records}
        await asyncio.sleep(timeout_ms / 1000)  # what a poll with nothing to read does
        return {}

    async def stop(self) -> None:
        return None


class _StuckCommits(_Feed):
    """The endpoint's consumer with the group coordinator gone: commits never answer."""

    async def commit(self, offsets: Any) -> None:
        await asyncio.Event().wait()


def _consume_from(monkeypatch: pytest.MonkeyPatch, consumer: FakeConsumer) -> None:
    """The endpoint reads `consumer`, started at once, and commits after every batch."""
    from sinks.webhooks import dispatcher

    async def started(*_args: Any) -> bool:
        return True

    monkeypatch.setattr(dispatcher, "new_consumer", lambda *_a, **_k: consumer)
    monkeypatch.setattr(dispatcher, "COMMIT_INTERVAL_S", 0.0)
    monkeypatch.setattr(dispatcher, "start_consumer", started)


def test_a_stop_halts_deliveries_at_once_while_the_consumer_is_stuck_in_a_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`consume` sees the stop only between fetches; stuck in a commit (a coordinator
    gone), it left the workers taking queued jobs after the stop, whose outcomes the
    same outage may not let it record: posted again by the next run."""
    from sinks import consumer as sink_consumer

    pipe, _producer = _pipe("stop-in-a-commit")
    values = [b"not an alert"] + [make_alert(n).model_dump_json().encode() for n in range(3)]
    stuck = _StuckCommits(records_of(TP, values, 0))  # the first consumed at once: a commit
    _consume_from(monkeypatch, stuck)
    monkeypatch.setattr(sink_consumer, "COMMIT_TIMEOUT_S", 1.0)
    posted: list[int] = []
    posting, answered = asyncio.Event(), asyncio.Event()

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        posted.append(job.offset)
        posting.set()
        await answered.wait()
        return {}, DeliveryResult(delivered=True, attempts=1)

    pipe._deliver = attempt  # type: ignore[method-assign]

    async def run() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(pipe.run(stop))
        await asyncio.wait_for(posting.wait(), 5)  # 1 posted; consume is in its commit
        stop.set()
        await asyncio.wait_for(pipe.stopping.wait(), 5)  # seen at once, mid-commit
        answered.set()
        await asyncio.wait_for(running, 10)

    asyncio.run(run())
    assert posted == [1]  # 2 and 3 did not start after the stop
    assert pipe.stats.delivered == 1


def test_a_stop_during_a_periodic_commit_spends_one_commit_timeout_not_two(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The consume loop's periodic commit, stuck (a coordinator gone), was awaited before
    the final commit: a stop spent two `COMMIT_TIMEOUT_S` where its deadline budgets one
    (notify_runner.py). Cancelled, the final commit commits what it would have."""
    from sinks import consumer as sink_consumer

    class Committing(_StuckCommits):
        async def commit(self, offsets: Any) -> None:
            committing.set()
            await super().commit(offsets)

    pipe, _producer = _pipe("stop-one-commit")
    values = [make_alert(n).model_dump_json().encode() for n in range(2)]
    committing = asyncio.Event()
    stuck = Committing(records_of(TP, values, 0))
    _consume_from(monkeypatch, stuck)
    monkeypatch.setattr(sink_consumer, "COMMIT_TIMEOUT_S", 0.3)

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        return {}, DeliveryResult(delivered=True, attempts=1)

    pipe._deliver = attempt  # type: ignore[method-assign]

    async def run() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(pipe.run(stop))
        await asyncio.wait_for(committing.wait(), 5)  # the periodic commit (interval 0)
        stop.set()
        await asyncio.wait_for(running, 10)

    with capture_logs() as logged:
        asyncio.run(run())
    failed = [e["error"] for e in logged if e["event"] == "commit_failed"]
    assert failed == ["TimeoutError"]  # the final commit's alone


def test_a_stop_leaves_no_error_of_the_consume_loop_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a stop the consume loop is cancelled at once, not left running while the posts
    under way end: left running, an error it raised meanwhile (a bug in its periodic
    commit's path) was absorbed by the clean-up, the run ending 0 with nothing logged."""

    pipe, _producer = _pipe("stop-consume-error")
    values = [make_alert(n).model_dump_json().encode() for n in range(2)]
    feed = _Feed(records_of(TP, values, 0))
    _consume_from(monkeypatch, feed)
    posting = asyncio.Event()

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        if job.offset == 1:  # a post under way at the stop, which the stop waits for
            posting.set()
            await asyncio.sleep(0.5)
        return {}, DeliveryResult(delivered=True, attempts=1)

    pipe._deliver = attempt  # type: ignore[method-assign]
    in_batch = asyncio.Event()
    raised: list[str] = []
    after_batch = pipe.after_batch

    async def failing_after_batch(consumer: Any) -> None:
        if not posting.is_set():
            await after_batch(consumer)
            return
        in_batch.set()
        await asyncio.sleep(0.05)  # e.g. a commit request under way when the stop comes
        raised.append("RuntimeError")
        raise RuntimeError("a bug of ours in the consume loop, after the stop")

    monkeypatch.setattr(pipe, "after_batch", failing_after_batch)

    async def run() -> str:
        stop = asyncio.Event()
        running = asyncio.create_task(pipe.run(stop))
        await asyncio.wait_for(in_batch.wait(), 5)
        stop.set()
        try:
            await asyncio.wait_for(running, 10)
        except RuntimeError:
            return "raised"
        return "returned"

    ended = asyncio.run(run())
    assert not raised or ended == "raised"  # cancelled before it raised, or raised by run
    assert pipe.stats.delivered == 2  # the post under way still ended and was recorded


def test_a_worker_that_dies_lets_the_endpoints_other_posts_under_way_end_and_be_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endpoint's run cancelled its other workers when one died: a post its receiver
    already had was left with no outcome nor commit, and the next run posted it again."""
    from sinks.webhooks import dispatcher

    pipe, producer = _pipe("died-beside-a-post")
    pipe.endpoint = pipe.endpoint.model_copy(update={"concurrency": 2})
    values = [make_alert(n).model_dump_json().encode() for n in range(2)]
    feed = _Feed(records_of(TP, values, 0))
    monkeypatch.setattr(dispatcher, "new_consumer", lambda *_a, **_k: feed)

    async def started(*_args: Any) -> bool:
        return True

    monkeypatch.setattr(dispatcher, "start_consumer", started)
    posting, answered = asyncio.Event(), asyncio.Event()

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        if job.offset == 1:
            await posting.wait()
            raise RuntimeError("a bug outside any one delivery")  # its worker dies
        posting.set()
        await answered.wait()  # the receiver has the post and takes its time to answer
        return {}, DeliveryResult(delivered=True, attempts=1)

    pipe._deliver = attempt  # type: ignore[method-assign]

    async def run() -> None:
        running = asyncio.create_task(pipe.run(asyncio.Event()))
        await asyncio.wait_for(posting.wait(), 5)
        done, _ = await asyncio.wait({running}, timeout=0.3)
        assert not done  # it waits for the post under way
        answered.set()
        with pytest.raises(dispatcher.WorkerDied):
            await asyncio.wait_for(running, 10)

    asyncio.run(run())
    assert pipe.stats.delivered == 1
    assert producer.sent == ["cw.webhook-deliveries"]  # its outcome, in the delivery log
    assert feed.commits[-1] == {TP: (1, "")}  # and committed: the next run skips it


def test_a_delivery_waiting_to_retry_when_its_partition_is_revoked_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its record is read again by the partition's next assignment, which delivers it:
    retrying it here too, up to the retry horizon, held a worker and posted it twice;
    and the wait ends with the revocation (a Retry-After may ask for minutes, while
    the new assignment's deliveries waited behind it)."""
    pipe, producer = _pipe("revoked-retrying")
    pipe.policy = RetryPolicy(initial_backoff_s=600.0)  # a wait no test outlasts
    failed, attempts = _receiver_unavailable(monkeypatch)

    async def run() -> None:
        await _read(pipe, 1)
        worker = asyncio.create_task(pipe._work(None))  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(5):
                await failed.wait()
                pipe.revoking([TP])  # a rebalance begins while it waits to retry
                pipe.forget(TP)
                await pipe._none_in_flight.wait()  # its wait ended: left, not retried
        finally:
            await _stopped(worker)

    asyncio.run(run())
    assert len(attempts) == 1
    assert (pipe.stats.delivered, pipe.stats.gave_up) == (0, 0)
    assert producer.sent == []  # no outcome: its next assignment delivers it


def test_another_partitions_revocation_does_not_end_a_retry_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe, _producer = _pipe("other-revoked")
    pipe.policy = RetryPolicy(initial_backoff_s=600.0)
    failed, _attempts = _receiver_unavailable(monkeypatch)

    async def run() -> None:
        await _read(pipe, 1)
        worker = asyncio.create_task(pipe._work(None))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(failed.wait(), 5)
            pipe.revoking([TopicPartition("cw.alerts", 7)])
            for _ in range(50):  # loop turns in which a woken wait would end
                await asyncio.sleep(0)
            assert pipe.in_flight == 1  # still waiting to retry its own record
            await asyncio.wait_for(pipe.finish_in_flight(), 5)  # a stop still ends it
        finally:
            await _stopped(worker)

    asyncio.run(run())
    assert (pipe.stats.delivered, pipe.stats.gave_up) == (0, 0)


class _Endless(_Feed):
    """A backlog that never ends: a new record at every fetch."""

    def __init__(self) -> None:
        super().__init__([])
        self.fetches = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        self.fetches += 1
        value = make_alert(self.fetches).model_dump_json().encode()
        await asyncio.sleep(0)
        return {TP: records_of(TP, [value], self.fetches - 1)}


def test_an_endpoint_that_fails_says_so_at_once_and_reads_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It read on at full speed while its posts under way ended, and the notifier
    stopped the other endpoints only after that wind-down (up to a timeout and a
    commit later), while they kept starting posts."""
    from sinks.webhooks import dispatcher

    pipe, _producer = _pipe("fails-and-says-so")
    pipe.endpoint = pipe.endpoint.model_copy(update={"concurrency": 2})
    feed = _Endless()
    monkeypatch.setattr(dispatcher, "new_consumer", lambda *_a, **_k: feed)

    async def started(*_args: Any) -> bool:
        return True

    monkeypatch.setattr(dispatcher, "start_consumer", started)
    posting, answered, told = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        if job.offset == 1:
            await posting.wait()
            raise RuntimeError("a bug outside any one delivery")  # its worker dies
        if job.offset == 0:
            posting.set()
            await answered.wait()  # the receiver takes its time to answer
        return {}, DeliveryResult(delivered=True, attempts=1)

    pipe._deliver = attempt  # type: ignore[method-assign]

    async def run() -> None:
        running = asyncio.create_task(pipe.run(asyncio.Event(), on_error=lambda _exc: told.set()))
        await asyncio.wait_for(told.wait(), 5)  # while the post under way still waits
        assert not answered.is_set()
        fetched = feed.fetches
        for _ in range(50):  # loop turns in which a reading consumer would fetch
            await asyncio.sleep(0)
        assert feed.fetches <= fetched + 1  # at most the fetch it was in
        answered.set()
        with pytest.raises(dispatcher.WorkerDied):
            await asyncio.wait_for(running, 10)

    asyncio.run(run())


class _FailingPipe:
    """A pipeline whose run fails: says so at once (`on_error`), raises after `wind_down`."""

    def __init__(self, error: Exception | None, wind_down: asyncio.Event | None) -> None:
        self.error, self.wind_down = error, wind_down

    async def run(self, stop: asyncio.Event, *, drain: bool, on_error: Any) -> None:
        if self.error is None:  # a healthy one: stops when told, then fails on its way out
            await stop.wait()
            raise RuntimeError("failed while stopping")
        on_error(self.error)
        assert self.wind_down is not None
        await self.wind_down.wait()  # its posts under way end first
        raise self.error


def test_the_notifier_raises_the_first_error_not_the_first_wound_down() -> None:
    """The first fault is the one to report: another endpoint failing while it stops
    (told at once now) used to be raised in its place."""
    from sinks.webhooks.notifier import Notifier

    notifier = Notifier.__new__(Notifier)
    wind_down = asyncio.Event()
    first = RuntimeError("the first fault")
    notifier.pipes = [_FailingPipe(first, wind_down), _FailingPipe(None, None)]  # type: ignore[list-item]

    async def run() -> None:
        running = asyncio.create_task(notifier._run_pipes(asyncio.Event(), drain=False))
        for _ in range(20):  # the healthy one is halted and fails, the first winds down
            await asyncio.sleep(0)
        wind_down.set()
        with pytest.raises(RuntimeError) as raised:
            await asyncio.wait_for(running, 5)
        assert raised.value is first

    asyncio.run(run())
