"""An unchanged re-publish is not delivered again, and the memory survives a restart.

After a restart the engine re-announces every alert it owns: the same content at a
new offset of `alerts`. The notifier delivered each one again (Slack and Teams
re-posted every alert into the channel), and a fresh notifier did so under new
`webhook-id`s, so even receivers that de-duplicate were paged again. These tests
drive one endpoint's pipe without Kafka, and the read-back against the suite's
broker; the whole restart against a real broker is in test_webhook_delivery.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import pytest
from aiokafka import TopicPartition
from log_lines import Lines
from prometheus_client import REGISTRY
from sink_harness import prepare_all_topics, publish
from sink_samples import make_alert
from webhook_pipes import FakeConsumer, LogProducer, hand_records, offline_pipe

from chainwatch.settings import Settings
from schemas.alerts import Alert, AlertStatus, Severity
from sinks.webhooks import warmup
from sinks.webhooks.delivery import DeliveryResult
from sinks.webhooks.dispatcher import EndpointPipe
from sinks.webhooks.outcomes import Job
from sinks.webhooks.rebalance import RebalanceListener
from streams.topics import ALERTS

TP = TopicPartition("cw.alerts", 3)
OTHER = TopicPartition("cw.alerts", 5)


def _pipe(name: str, filters: dict[str, Any] | None = None) -> EndpointPipe:
    return offline_pipe(name, filters)


def _handle(
    pipe: EndpointPipe, alerts: Iterable[Alert], first: int, tp: TopicPartition = TP
) -> None:
    hand_records(pipe, tp, (a.model_dump_json().encode() for a in alerts), first)


def _queued(pipe: EndpointPipe) -> list[tuple[int, str, str]]:
    """(offset, alert id, webhook-id) of every queued delivery, emptying the queue."""
    jobs = []
    while not pipe.queue.empty():
        job = pipe.queue.get_nowait()
        jobs.append((job.offset, job.alert.alert_id, job.msg_id))
    return jobs


def _skipped(endpoint: str) -> float:
    value = REGISTRY.get_sample_value(
        "chainwatch_webhook_repeats_skipped_total", {"endpoint": endpoint}
    )
    return value or 0.0


def test_an_unchanged_republish_is_not_delivered_again_and_its_offset_is_consumed() -> None:
    pipe = _pipe("repeat-unchanged")
    alerts = [make_alert(1), make_alert(2)]
    _handle(pipe, alerts, first=0)
    _handle(pipe, alerts, first=2)  # the engine re-announced both after a restart

    assert [o for o, _, _ in _queued(pipe)] == [0, 1]
    assert pipe.stats.repeats == 2
    assert _skipped("repeat-unchanged") == 2
    # the first records are pending: the position stays below them, so a crash
    # re-reads (and re-delivers) them; their repeats are noted finished (done.py)
    assert pipe.tracker.committable() == {TP: (0, "d2:0:2.2")}
    pipe.tracker.done(TP, 0)
    pipe.tracker.done(TP, 1)
    assert pipe.tracker.committable() == {TP: (4, "")}  # the repeats: consumed, 0 deliveries


def _one_queued(name: str) -> tuple[EndpointPipe, LogProducer, Alert, Job]:
    """A pipeline that has taken one alert at offset 0 from its queue to deliver it."""
    pipe = _pipe(name)
    producer = LogProducer()
    pipe.producer = producer  # type: ignore[assignment]
    alert = make_alert(1)
    _handle(pipe, [alert], first=0)
    return pipe, producer, alert, pipe.queue.get_nowait()


def test_a_repeat_of_a_message_given_up_is_delivered() -> None:
    pipe, producer, alert, job = _one_queued("repeat-after-gave-up")

    async def down_past_the_horizon(_http: Any, _job: Any) -> tuple[dict[str, Any], DeliveryResult]:
        return {}, DeliveryResult(delivered=False, attempts=5)

    pipe._deliver = down_past_the_horizon  # type: ignore[method-assign]
    asyncio.run(pipe._settle(None, job))  # type: ignore[arg-type]  # no HTTP here
    assert producer.sent == ["cw.webhook-deliveries", "cw.webhook-dead-letter"]
    _handle(pipe, [alert], first=1)  # the engine re-announces it after a restart
    [(offset, _, msg_id)] = _queued(pipe)
    assert offset == 1
    assert msg_id != job.msg_id  # the receiver never had the first
    assert pipe.stats.repeats == 0


def test_a_delivered_message_whose_outcome_could_not_be_recorded_is_no_give_up() -> None:
    pipe, _producer, alert, job = _one_queued("repeat-after-unrecorded")

    async def delivered(_http: Any, _job: Any) -> tuple[dict[str, Any], DeliveryResult]:
        return {}, DeliveryResult(delivered=True, attempts=1)

    finish = pipe._finish
    calls = []

    async def first_record_fails(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise ValueError("a bug while recording the outcome")
        await finish(*args)

    pipe._deliver = delivered  # type: ignore[method-assign]
    pipe._finish = first_record_fails  # type: ignore[method-assign]
    asyncio.run(pipe._settle(None, job))  # type: ignore[arg-type]  # no HTTP here
    assert len(calls) == 2  # recorded once more, as a processing error
    _handle(pipe, [alert], first=1)  # the receiver has it: its repeat is skipped
    assert _queued(pipe) == []
    assert pipe.stats.repeats == 1


def test_a_changed_alert_and_a_reopen_with_earlier_content_are_delivered_with_new_ids() -> None:
    pipe = _pipe("repeat-changes")
    opened = make_alert(1)
    resolved = make_alert(1, AlertStatus.RESOLVED)
    _handle(pipe, [opened, resolved, opened, opened], first=0)  # A → B → A, then A again

    jobs = _queued(pipe)
    assert [o for o, _, _ in jobs] == [0, 1, 2]
    assert len({msg_id for _, _, msg_id in jobs}) == 3
    assert pipe.stats.repeats == 1


def test_the_memory_follows_every_record_whatever_the_filters_keep() -> None:
    """A → B → A where the filters leave B out is a new message (an escalation back to
    critical pages again), and a repeat of a record filtered out is not counted."""
    pipe = _pipe("repeat-filters", {"severities": ["critical"]})
    critical = make_alert(1, severity=Severity.CRITICAL)
    warning = make_alert(1, severity=Severity.WARNING)
    _handle(pipe, [critical, warning, critical, critical, warning, warning], first=0)

    jobs = _queued(pipe)
    assert [o for o, _, _ in jobs] == [0, 2]
    assert jobs[0][2] != jobs[1][2]
    assert pipe.stats.repeats == 1  # offset 3; the warnings were filtered out
    # 0 and 2 pending; 1, 3, 4 and 5 needed no delivery: noted finished
    assert pipe.tracker.committable() == {TP: (0, "d2:0:1,1.3")}
    pipe.tracker.done(TP, 0)
    pipe.tracker.done(TP, 2)
    assert pipe.tracker.committable() == {TP: (6, "")}


def test_records_read_back_before_the_committed_position_are_remembered_not_delivered() -> None:
    pipe = _pipe("repeat-warm")
    one, two, three = make_alert(1), make_alert(2), make_alert(3)
    earlier = [one, two, make_alert(3, AlertStatus.RESOLVED), three]
    for offset, alert in enumerate(earlier):  # as read_back shows them
        pipe.warmup.remember(TP, offset, alert.model_dump_json().encode())
    pipe.warmup.remember(TP, 4, b"not an alert")  # skipped, as it was when read live
    pipe.warmup.remember(TP, 5, None)
    assert pipe.queue.empty()
    assert (pipe.stats.alerts, pipe.stats.invalid) == (0, 0)  # nothing counted twice

    changed = make_alert(2, severity=Severity.WARNING)
    _handle(pipe, [one, two, three, changed], first=6)  # re-announced, and one change

    assert [(o, a) for o, a, _ in _queued(pipe)] == [(9, changed.alert_id)]
    assert pipe.stats.repeats == 3


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Lines:
    recorder = Lines()
    monkeypatch.setattr(warmup, "log", recorder)
    return recorder


def test_a_failed_warm_up_forgets_what_it_read_of_its_partitions_and_delivers(
    monkeypatch: pytest.MonkeyPatch, lines: Lines
) -> None:
    """A partial read could hold an older content as an alert's latest and skip a real
    change: what it read of an unfinished partition is dropped, the partition resumed."""
    pipe = _pipe("repeat-failed")
    one, two = make_alert(1), make_alert(2)

    async def broken(
        tps: Collection[TopicPartition], positions: Any, config: Any, on_record: Any, on_done: Any,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        assert [await positions(tp) for tp in tps] == [10, 10]
        on_record(TP, 0, one.model_dump_json().encode())
        on_done(warmup.PartitionRead(TP, 0, 10, 1, 0.5))
        on_record(OTHER, 0, two.model_dump_json().encode())
        raise warmup.WarmupFailed("fetching records of cw.alerts[5]: KafkaConnectionError")

    monkeypatch.setattr(warmup, "read_back", broken)
    consumer = FakeConsumer([TP, OTHER])

    async def run() -> None:
        await RebalanceListener(pipe, consumer).on_partitions_assigned({TP, OTHER})
        assert consumer.paused() == {TP, OTHER}
        assert pipe.fetch_limit(consumer) == 100  # type: ignore[arg-type]
        assert consumer.paused() == {TP, OTHER}  # room, but both still warming
        assert not pipe.idle()
        task = pipe.warmup._task
        assert task is not None
        await task

    asyncio.run(run())
    assert pipe.warmup.warming == set()
    pipe.fetch_limit(consumer)  # type: ignore[arg-type]
    assert consumer.paused() == set()
    [done] = lines.named("webhook_warmup_done")
    assert (done["partition"], done["records"], done["to_offset"]) == (3, 1, 10)
    [failed] = lines.named("webhook_warmup_failed")
    assert (failed["level"], failed["partitions"]) == ("warning", [5])
    assert "KafkaConnectionError" in failed["error"]
    assert "may be delivered again" in failed["consequence"]

    _handle(pipe, [one], first=10)
    _handle(pipe, [two], first=10, tp=OTHER)
    assert [(tp_offset, a) for tp_offset, a, _ in _queued(pipe)] == [(10, two.alert_id)]
    assert pipe.stats.repeats == 1


def test_a_revocation_cancels_the_warm_up_and_forgets_the_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = _pipe("repeat-revoked")
    one = make_alert(1)
    reading = asyncio.Event()

    async def slow(
        tps: Collection[TopicPartition], positions: Any, config: Any, on_record: Any, on_done: Any,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        on_record(TP, 0, one.model_dump_json().encode())
        reading.set()
        await asyncio.Event().wait()  # a long read-back, until cancelled

    monkeypatch.setattr(warmup, "read_back", slow)
    consumer = FakeConsumer([TP])

    async def run() -> None:
        listener = RebalanceListener(pipe, consumer)
        await listener.on_partitions_assigned({TP})
        await asyncio.wait_for(reading.wait(), 5)
        assert len(pipe.ids) == 1  # what the read-back saw so far
        task = pipe.warmup._task
        await listener.on_partitions_revoked({TP})
        assert task is not None
        assert task.cancelled()
        assert pipe.warmup.warming == set()
        assert len(pipe.ids) == 0  # forgotten with the partition

    asyncio.run(run())
    _handle(pipe, [one], first=1)  # handed on after the revocation: read again once assigned
    assert _queued(pipe) == []


def test_no_warm_up_when_it_is_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is read back; the partition is held only for its commit's done offsets."""
    pipe = _pipe("repeat-off")
    pipe.warmup.config = warmup.WarmupConfig(records=0)
    consumer = FakeConsumer([TP])

    async def never(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("read back although turned off")

    monkeypatch.setattr(warmup, "read_back", never)

    async def run() -> None:
        await RebalanceListener(pipe, consumer).on_partitions_assigned({TP})
        assert pipe.warmup._task is not None
        await asyncio.wait_for(pipe.warmup._task, 5)

    asyncio.run(run())
    assert pipe.warmup.warming == set()
    pipe.fetch_limit(consumer)
    assert consumer.paused() == set()


def test_the_read_back_is_bounded_per_partition_and_stops_at_the_committed_position(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)
    topic = settings.kafka.topic(ALERTS)
    publish(settings, ALERTS, [(f"k{n}".encode(), f"v{n}".encode()) for n in range(40)])
    tps = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
    seen: dict[int, list[int]] = {}
    reads: list[warmup.PartitionRead] = []

    async def run() -> dict[TopicPartition, int]:
        probe = warmup.reader(settings.kafka.bootstrap, {})
        await probe.start()
        try:
            ends: dict[TopicPartition, int] = await probe.end_offsets(tps)
        finally:
            await probe.stop()
        committed = {tp: max(0, end - 1) for tp, end in ends.items()}  # the last one is not

        async def position(tp: TopicPartition) -> int:
            return committed[tp]

        await warmup.read_back(
            tps,
            position,
            warmup.WarmupConfig(records=3, timeout_s=30),
            lambda tp, offset, value: seen.setdefault(tp.partition, []).append(offset),
            reads.append,
            bootstrap=settings.kafka.bootstrap,
        )
        return committed

    committed = asyncio.run(run())
    assert sum(committed.values()) >= 8  # every partition got some of the 40
    for tp, end in committed.items():
        expected = list(range(max(0, end - 3), end))
        assert seen.get(tp.partition, []) == expected, tp
    assert sorted((r.tp.partition, r.first, r.end, r.records) for r in reads) == sorted(
        (tp.partition, max(0, end - 3), end, min(3, end)) for tp, end in committed.items()
    )


def test_a_read_back_that_cannot_reach_kafka_fails_within_its_deadline_saying_where() -> None:
    async def position(tp: TopicPartition) -> int:
        return 10

    async def run() -> None:
        await warmup.read_back(
            [TP],
            position,
            warmup.WarmupConfig(timeout_s=1.0),
            lambda *a: None,
            lambda r: None,
            bootstrap="127.0.0.1:9",  # nothing listens there
            options={"request_timeout_ms": 60_000},
        )

    began = time.monotonic()
    with pytest.raises(warmup.WarmupFailed, match=r"127\.0\.0\.1:9"):
        asyncio.run(run())
    assert time.monotonic() - began < 10
