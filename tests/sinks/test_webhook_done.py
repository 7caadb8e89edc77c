"""Deliveries finished above the committed position are not posted again after a restart.

With `concurrency > 1`, a delivery being retried held its partition's position
while the ones after it were delivered; a stop (or a `kill -9`) then re-read and
re-posted all of those (Slack and Teams do not de-duplicate). Each commit now
carries them in its metadata (done.py), read back when the partition is assigned.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import OffsetMetadataTooLargeError
from aiokafka.structs import OffsetAndMetadata
from notify_waits import secret_for, until
from prometheus_client import REGISTRY
from sink_harness import prepare_all_topics, publish
from sink_samples import make_alert
from structlog.testing import capture_logs
from webhook_pipes import FakeConsumer, LogProducer, offline_pipe, records_of
from webhook_servers import Server, loopback_webhooks, serve

from chainwatch.notify_runner import build_notifier, load_configured
from chainwatch.settings import Settings
from sinks.webhooks.delivery import DeliveryResult
from sinks.webhooks.dispatcher import EndpointPipe, NotifyStats
from sinks.webhooks.done import MAX_METADATA_BYTES, decode, encode
from sinks.webhooks.offsets import Commit, OffsetTracker
from sinks.webhooks.outcomes import Job
from sinks.webhooks.rebalance import RebalanceListener
from sinks.webhooks.settings import MAX_ATTEMPTS_BOUND
from sinks.webhooks.warmup import WarmupConfig
from streams.topics import ALERTS

TP = TopicPartition("cw.alerts", 3)


# --- the metadata codec ---------------------------------------------------------


def test_done_ranges_round_trip_relative_to_the_committed_offset() -> None:
    ranges = [(101, 102), (105, 107), (200, 1200)]
    encoded = encode(100, ranges)
    assert encoded.metadata == "d2:100:1,3.2,93.1000"
    assert encoded.left_out == 0
    assert decode(100, encoded.metadata) == ranges
    assert encode(100, []).metadata == ""  # nothing done: the plain commit of before


def test_done_ranges_past_the_bound_keep_the_lowest_and_count_the_rest() -> None:
    ranges = [(1_000_000 + 3 * i, 1_000_000 + 3 * i + 2) for i in range(2_000)]
    encoded = encode(999_000, ranges)
    assert len(encoded.metadata.encode()) <= MAX_METADATA_BYTES < 4096  # the broker's limit
    kept = decode(999_000, encoded.metadata)
    assert 0 < len(kept) < len(ranges)
    assert kept == ranges[: len(kept)]  # the lowest ones
    assert encoded.left_out == 2 * (len(ranges) - len(kept))


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "",
        "some other tool's note",
        "d1:",
        "d2:100:",
        "d2:99:1",  # written at another position: it would skip records
        "d2:x:1",
        "d1:100:1",  # a format never released
        "d2:1",  # no position
        "d2:1,2",
        "d2:100:1,,2",
        "d2:100:-1",
        "d2:100:1.0",
        "d2:100:1.x",
        "d2:100:1.2.3",
        "d2:100: 1",
        "d2:100:\uff11",  # a digit to `int`, but not ASCII
    ],
)
def test_garbled_or_foreign_metadata_is_no_done_offset(metadata: str | None) -> None:
    assert decode(100, metadata) == []


# --- the tracker -----------------------------------------------------------------


def test_offsets_done_above_a_held_position_are_in_the_commit_metadata() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.consumed(TP, offset, 1)
    for offset in (1, 2, 4):
        tracker.done(TP, offset)
    # 0 is retried: the position stays there, and 1, 2 and 4 are noted above it
    assert tracker.committable() == {TP: (0, "d2:0:1.2,1")}
    assert decode(0, "d2:0:1.2,1") == [(1, 3), (4, 5)]
    tracker.committed({TP: Commit(0, "d2:0:1.2,1")})
    assert tracker.committable() == {}
    tracker.consumed(TP, 5, 0)  # filtered out: no delivery
    tracker.consumed(TP, 6, 1)
    tracker.done(TP, 6)
    # only the done set changed: committed again, merged over 5 (read, nothing pending)
    assert tracker.committable() == {TP: (0, "d2:0:1.2,1.3")}
    tracker.done(TP, 0)
    tracker.done(TP, 3)
    assert tracker.committable() == {TP: (7, "")}


def test_a_record_held_for_long_keeps_what_finished_after_it_as_one_range() -> None:
    """One delivery retried for an hour while some 100,000 finish after it: each commit
    (every half second) re-sorted them all, and they were kept one by one."""
    tracker = OffsetTracker()
    for offset in range(100_001):
        tracker.consumed(TP, offset, 1)
    for offset in range(100_000, 0, -1):  # in any order
        tracker.done(TP, offset)
    assert tracker._parts[TP].finished == [(1, 100_001)]
    assert tracker.committable() == {TP: (0, "d2:0:1.100000")}


def test_restored_done_offsets_not_read_yet_stay_in_the_commit_until_passed() -> None:
    tracker = OffsetTracker()
    tracker.restore(TP, [(11, 13), (20, 21)])
    assert tracker.committable() == {}  # nothing read: its position is not ours to say
    tracker.consumed(TP, 10, 1)
    # 14..19 were not read yet: maybe pending for the commit that wrote these ranges
    assert tracker.committable() == {TP: (10, "d2:10:1.2,7")}
    assert tracker.finished_before(TP, 12)
    assert not tracker.finished_before(TP, 13)
    tracker.done(TP, 10)
    # 11 and 12 (at the position: gap 0) and 20 are still ahead, unread
    assert tracker.committable() == {TP: (11, "d2:11:0.2,7")}


# --- the pipe: a partition assigned with done offsets ------------------------------


def _pipe(name: str) -> tuple[EndpointPipe, LogProducer]:
    pipe = offline_pipe(name)
    pipe.warmup.config = WarmupConfig(records=0)  # only the done offsets are read
    producer = LogProducer()
    pipe.producer = producer  # type: ignore[assignment]
    return pipe, producer


async def _assign(pipe: EndpointPipe, consumer: FakeConsumer) -> None:
    await RebalanceListener(pipe, consumer).on_partitions_assigned({TP})
    assert TP in pipe.warmup.warming  # paused until its done offsets are read
    assert pipe.warmup._task is not None
    await asyncio.wait_for(pipe.warmup._task, 5)
    assert pipe.warmup.warming == set()


def _finished_skipped(endpoint: str) -> float | None:
    return REGISTRY.get_sample_value(
        "chainwatch_webhook_finished_skipped_total", {"endpoint": endpoint}
    )


def test_a_record_done_before_the_assignment_is_remembered_not_delivered_and_committed_past() -> (
    None
):
    pipe, _producer = _pipe("done-assigned")
    consumer = FakeConsumer([TP])
    consumer._coordinator.committed[TP] = OffsetAndMetadata(10, "d2:10:1.2")  # 11, 12 done
    alerts = [make_alert(n) for n in range(4)]
    values = [a.model_dump_json().encode() for a in alerts]

    async def run() -> None:
        await _assign(pipe, consumer)
        await pipe.handle(TP, records_of(TP, values, 10))
        # the engine re-announces the alert done at 11: a repeat, known from its record
        await pipe.handle(TP, records_of(TP, [values[1]], 14))

    asyncio.run(run())
    jobs = [pipe.queue.get_nowait() for _ in range(pipe.queue.qsize())]
    assert [j.offset for j in jobs] == [10, 13]  # 11 and 12 are not delivered again
    assert (pipe.stats.finished, pipe.stats.repeats) == (2, 1)
    assert _finished_skipped("done-assigned") == 2
    # the position stays below 10 (pending), with 11, 12 and the repeat at 14 noted done
    assert pipe.tracker.committable() == {TP: (10, "d2:10:1.2,1")}

    async def settle(job: Job) -> None:
        async def delivered(_http: Any, _job: Job) -> tuple[dict[str, Any], DeliveryResult]:
            return {}, DeliveryResult(delivered=True, attempts=1)

        pipe._deliver = delivered  # type: ignore[method-assign]
        await pipe._settle(None, job)  # type: ignore[arg-type]

    for job in jobs:
        asyncio.run(settle(job))
    assert pipe.tracker.committable() == {TP: (15, "")}  # committed past them


def test_done_offsets_that_cannot_be_read_are_delivered_as_before() -> None:
    pipe, _producer = _pipe("done-unread")
    consumer = FakeConsumer([TP])

    async def unavailable(_tps: Any) -> Any:
        raise ConnectionError("the coordinator is gone")

    consumer._coordinator.fetch_committed_offsets = unavailable  # type: ignore[method-assign]
    values = [make_alert(n).model_dump_json().encode() for n in range(3)]

    async def run() -> None:
        await _assign(pipe, consumer)
        await pipe.handle(TP, records_of(TP, values, 10))

    with capture_logs() as logged:
        asyncio.run(run())
    assert pipe.queue.qsize() == 3  # nothing skipped: a re-post at worst, never a loss
    unread = [e for e in logged if e["event"] == "webhook_done_offsets_unread"]
    assert [e["endpoint"] for e in unread] == ["done-unread"]
    assert "ConnectionError" in unread[0]["error"]


def test_a_warm_up_that_raises_still_hands_every_partition_over() -> None:
    """An error of ours in the warm-up (here handing one partition its done offsets)
    ended the task with every assigned partition paused for good: their alerts were
    never delivered, and nothing said so. Each is handed over now (forgotten, as after
    a failed read-back) and resumed by the consumer loop, the error logged."""
    pipe, _producer = _pipe("warmup-crash")
    tps = {TopicPartition(TP.topic, 0), TopicPartition(TP.topic, 1)}
    consumer = FakeConsumer(tps)
    restore = pipe.tracker.restore

    def broken(tp: TopicPartition, ranges: Any) -> None:
        if tp.partition == 0:
            raise RuntimeError("a bug in the hand-over")
        restore(tp, ranges)

    pipe.warmup.restore = broken
    values = [make_alert(n).model_dump_json().encode() for n in range(3)]

    async def run() -> None:
        await RebalanceListener(pipe, consumer).on_partitions_assigned(tps)
        assert consumer.paused() == tps
        assert pipe.warmup._task is not None
        await asyncio.wait_for(pipe.warmup._task, 5)
        pipe.fetch_limit(consumer)  # the consumer loop's turn: resumes what is not warming
        for tp in sorted(tps):
            await pipe.handle(tp, records_of(tp, values, 10))

    with capture_logs() as logged:
        asyncio.run(run())
    assert pipe.warmup.warming == set()
    assert consumer.paused() == set()
    assert pipe.queue.qsize() == 2 * len(values)  # both partitions delivered
    events = [e["event"] for e in logged]
    assert "webhook_warmup_crashed" in events
    failed = [e for e in logged if e["event"] == "webhook_warmup_handover_failed"]
    assert [e["partition"] for e in failed] == [0]
    (gave_up,) = [e for e in logged if e["event"] == "webhook_warmup_failed"]
    assert gave_up["partitions"] == [0, 1]
    assert "RuntimeError: a bug in the hand-over" in gave_up["error"]


def test_done_offsets_the_metadata_cannot_hold_are_logged_once() -> None:
    pipe, _producer = _pipe("done-left-out")
    consumer = FakeConsumer([TP])
    for offset in range(4_000):
        pipe.tracker.consumed(TP, offset, 1)
    for offset in range(1, 4_000, 2):  # every other one done: 2,000 ranges
        pipe.tracker.done(TP, offset)

    with capture_logs() as logged:
        asyncio.run(pipe.commit(consumer))
        pipe.tracker.done(TP, 2)
        asyncio.run(pipe.commit(consumer))
    (offset, metadata) = consumer.commits[-1][TP]
    assert offset == 0
    assert len(metadata) <= MAX_METADATA_BYTES
    left = [e for e in logged if e["event"] == "webhook_done_offsets_left_out"]
    assert len(left) == 1
    assert left[0]["offsets"] > 0


def test_a_broker_refusing_the_metadata_gets_plain_commits_at_once() -> None:
    """A broker whose `offset.metadata.max.bytes` is below ours refuses every commit
    that carries done offsets: the position would never be committed."""
    pipe, _producer = _pipe("done-refused")

    class SmallMetadataBroker(FakeConsumer):
        async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
            if any(metadata for _offset, metadata in offsets.values()):
                raise OffsetMetadataTooLargeError
            await super().commit(offsets)

    consumer = SmallMetadataBroker([TP])
    for offset in range(4):
        pipe.tracker.consumed(TP, offset, 1)
    pipe.tracker.done(TP, 0)
    pipe.tracker.done(TP, 2)  # above 1, still retried: metadata "d2:1:1", refused

    with capture_logs() as logged:
        asyncio.run(pipe.commit(consumer))
        assert consumer.commits == [{TP: (1, "")}]  # at once, not at the next interval
        pipe.tracker.done(TP, 3)
        asyncio.run(pipe.commit(consumer))  # no metadata tried again
        pipe.tracker.done(TP, 1)
        asyncio.run(pipe.commit(consumer))
    assert consumer.commits == [{TP: (1, "")}, {TP: (4, "")}]
    refused = [e for e in logged if e["event"] == "webhook_done_offsets_refused"]
    assert [e["endpoint"] for e in refused] == ["done-refused"]  # once, not per commit


def test_a_number_too_long_for_an_offset_is_garbled_not_an_error() -> None:
    assert decode(100, "d2:100:" + "9" * 5_000) == []  # `int` raises past 4,300 digits
    assert decode(100, "d2:100:" + "9" * 20) == []
    assert decode(0, "d2:0:" + "9" * 19) == [(9_999_999_999_999_999_999, 10**19)]


def test_no_range_that_fits_is_no_metadata() -> None:
    encoded = encode(0, [(5, 6), (8, 9)], limit=0)
    assert encoded.metadata == ""
    assert encoded.left_out == 2


# --- on the real broker ------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_a_restart_does_not_post_again_what_was_delivered_after_a_delivery_still_retried(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """Four workers; the first record's receiver answers 500 while the seven after it,
    in the same partition, are delivered; the notifier is stopped (a rolling restart)
    and run again once the receiver is healthy."""
    alerts = [make_alert(n) for n in range(8)]
    stuck = alerts[0].alert_id
    healthy = asyncio.Event()
    answers: list[tuple[str, int]] = []  # (alert id, status) of every request

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        alert_id = json.loads(s.bodies[-1])["data"]["alert_id"]
        code = 500 if alert_id == stuck and not healthy.is_set() else 200
        answers.append((alert_id, code))
        w.write(f"HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n".encode())
        await w.drain()

    def posts_of(alert_id: str, code: int) -> int:
        return sum(1 for a, c in answers if a == alert_id and c == code)

    async def run() -> tuple[NotifyStats, NotifyStats]:
        async with serve(answer) as server:
            subs = tmp_path / "subscriptions.yaml"
            endpoint = {
                "name": "ops",
                "url": server.url,
                "secret": secret_for("ops"),
                "concurrency": 4,
            }
            subs.write_text(json.dumps({"endpoints": [endpoint]}))  # JSON is YAML
            settings = settings_factory(
                webhooks=loopback_webhooks(
                    subs, retry_horizon_s=600.0, max_attempts=MAX_ATTEMPTS_BOUND
                )
            )
            prepare_all_topics(settings)
            # one key: one partition, the retried record first
            publish(settings, ALERTS, [(b"k", a.model_dump_json().encode()) for a in alerts])

            first = build_notifier(settings, load_configured(settings))
            stop = asyncio.Event()
            running = asyncio.create_task(first.run(stop))
            try:
                await until(
                    lambda: (
                        all(posts_of(a.alert_id, 200) == 1 for a in alerts[1:])
                        and posts_of(stuck, 500) >= 2
                    ),
                    60,
                    "the seven delivered while the first is retried",
                )
            finally:
                stop.set()  # what SIGTERM does
                await asyncio.wait_for(running, 60)

            healthy.set()
            second = build_notifier(settings, load_configured(settings))
            again = await asyncio.wait_for(second.run(asyncio.Event(), drain=True), 60)
            return first.stats, again

    before, after = asyncio.run(run())
    assert before.delivered == 7
    assert posts_of(stuck, 200) == 1  # the retried one: delivered once, by the next run
    assert [posts_of(a.alert_id, 200) for a in alerts[1:]] == [1] * 7  # not again
    assert (after.delivered, after.finished) == (1, 7)
