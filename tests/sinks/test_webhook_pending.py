"""A held-up endpoint shows: `chainwatch_webhook_oldest_pending_seconds` (no Kafka, no HTTP).

With `concurrency: 1` the alerts after a delivery its receiver hangs on or answers 5xx
wait behind it, up to the retry horizon; with rare alerts the queue's depth stays small
all the while, so the age of the oldest pending delivery is what tells it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from sink_samples import make_alert
from webhook_pipes import LogProducer, offline_pipe, records_of

from sinks.webhooks.delivery import DeliveryResult
from sinks.webhooks.outcomes import Job
from sinks.webhooks.pending import PendingAges

TP = TopicPartition("cw.alerts", 0)
NAME = "held-up"


def _oldest_s() -> float | None:
    return REGISTRY.get_sample_value(
        "chainwatch_webhook_oldest_pending_seconds", {"endpoint": NAME}
    )


def test_alerts_waiting_behind_a_retried_delivery_show_in_the_oldest_pending_age() -> None:
    pipe = offline_pipe(NAME)
    pipe.producer = LogProducer()  # type: ignore[assignment]
    now = [1000.0]
    pipe.pending = PendingAges(clock=lambda: now[0])
    posted, answered, drained = asyncio.Event(), asyncio.Event(), asyncio.Event()
    attempted: list[int] = []
    take = pipe.queue.get

    async def next_job() -> Job:  # the worker is back for more: all before it is settled
        if pipe.queue.empty():
            drained.set()
        return await take()

    async def attempt(_http: Any, job: Job) -> tuple[dict[str, Any], DeliveryResult]:
        attempted.append(job.offset)
        posted.set()
        if job.offset == 0:  # the receiver holds the first one: retried, here by hand
            await answered.wait()
        return {}, DeliveryResult(delivered=True, attempts=1)

    async def run() -> None:
        assert _oldest_s() == 0
        alerts = [make_alert(n).model_dump_json().encode() for n in range(2)]
        await pipe.handle(TP, records_of(TP, alerts, 0))
        pipe._deliver = attempt  # type: ignore[method-assign]
        pipe.queue.get = next_job  # type: ignore[method-assign]
        worker = asyncio.create_task(pipe._work(None))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(posted.wait(), 5)
            now[0] += 1800.0  # half an hour of retries
            assert (attempted, pipe.queue.qsize()) == ([0], 1)  # the second one waits
            assert _oldest_s() == 1800.0
            answered.set()
            await asyncio.wait_for(drained.wait(), 5)
            assert attempted == [0, 1]
            assert _oldest_s() == 0
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    asyncio.run(run())
    assert pipe.stats.delivered == 2
