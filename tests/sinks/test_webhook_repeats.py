"""An unchanged re-publish is not delivered again, and the memory survives a restart.

After a restart the engine re-announces every alert it owns: the same content at a
new offset of `alerts`. The notifier delivered each one again (Slack and Teams
re-posted every alert into the channel), and a fresh notifier did so under new
`webhook-id`s, so even receivers that de-duplicate were paged again. These tests
drive one endpoint's pipe without Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY
from sink_samples import make_alert, record

from schemas.alerts import Alert, AlertStatus, Severity
from sinks.webhooks.delivery import RetryPolicy
from sinks.webhooks.dispatcher import EndpointPipe, PipeConfig, Topics
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import TargetPolicy, parse_networks

TP = TopicPartition("cw.alerts", 3)


def _pipe(name: str, filters: dict[str, Any] | None = None) -> EndpointPipe:
    endpoint = Endpoint.model_validate(
        {
            "name": name,
            "url": "https://hooks.example.com/x",
            "format": "slack",
            "filters": filters or {},
        }
    )
    config = PipeConfig(
        bootstrap="unused:9092",
        group_id="cw-notify",
        topics=Topics("cw.alerts", "cw.webhook-deliveries", "cw.webhook-dead-letter"),
        policy=RetryPolicy(),
        targets=TargetPolicy(parse_networks("")),
        queue_size=100,
        consumer_options={},
    )
    return EndpointPipe(endpoint, config, producer=None)  # type: ignore[arg-type]  # no I/O here


def _handle(
    pipe: EndpointPipe, alerts: Iterable[Alert], first: int, tp: TopicPartition = TP
) -> None:
    records: list[ConsumerRecord[bytes, bytes]] = [
        record(
            a.model_dump_json().encode(), topic=tp.topic, partition=tp.partition, offset=first + i
        )
        for i, a in enumerate(alerts)
    ]
    asyncio.run(pipe.handle(tp, records))


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
    # the first records are pending: nothing is committed past them, so a crash
    # re-reads (and re-delivers) them before their repeats
    assert pipe.tracker.committable() == {}
    pipe.tracker.done(TP, 0)
    pipe.tracker.done(TP, 1)
    assert pipe.tracker.committable() == {TP: 4}  # the repeats: consumed, 0 deliveries


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
    assert pipe.tracker.committable() == {}
    pipe.tracker.done(TP, 0)
    pipe.tracker.done(TP, 2)
    assert pipe.tracker.committable() == {TP: 6}
