"""A read-back of the held topic racing a held message's tombstone (dispatcher.py
`_drop_held`, `_restore_held`).

A read-back past the bound may meet a message's record before its tombstone lands: the
message was sent (or dropped) while the read ran, or its tombstone was being written when
the read began. It held it again, and the next release check sent it a second time
(tests/sinks/test_webhook_silences_e2e.py provokes it on the broker). No broker here: one
endpoint's pipe, its producer holding the tombstone as long as the test says, its
read-back answering the record as the topic held it before.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from aiokafka import TopicPartition
from sink_samples import make_alert
from webhook_pipes import offline_pipe

from sinks.webhooks import dispatcher
from sinks.webhooks.dispatcher import EndpointPipe
from sinks.webhooks.held import HeldMessage, HeldRead
from sinks.webhooks.outcomes import Job
from sinks.webhooks.silence_follower import SilenceFollower

TP = TopicPartition("cw.alerts", 2)
HELD = "cw.webhook-held"
WAIT_S = 10.0


class HeldProducer:
    """Takes every record at once, except tombstones of the held topic while `gate` is
    clear (`entered` set once one waits)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.tombstones: list[bytes] = []

    async def send_and_wait(self, topic: str, value: bytes | None, key: bytes) -> None:
        if topic == HELD and value is None:
            self.entered.set()
            await self.gate.wait()
            self.tombstones.append(key)


def _pipe(producer: HeldProducer) -> EndpointPipe:
    follower = SilenceFollower("unused:9092", "cw.webhook-silences", 1, call_s=5.0)
    pipe = offline_pipe("ops", silences=follower, producer=producer)  # type: ignore[arg-type]
    topics = dataclasses.replace(pipe.config.topics, held=HELD, held_partitions=1)
    pipe.config = dataclasses.replace(pipe.config, topics=topics)
    pipe.assignments.assigned([TP])  # (not `assigned`: no read-back of its own)
    pipe._assigned = {TP}
    return pipe


def _job(pipe: EndpointPipe, offset: int, *, released: bool = True) -> Job:
    alert = make_alert(1)
    generation = pipe.assignments.generation(TP)
    return Job(alert, f"msg_{offset}", TP, offset, generation, released=released)


def _as_read(pipe: EndpointPipe, job: Job) -> HeldRead:
    held = HeldMessage(
        endpoint=pipe.endpoint.name,
        webhook_id=job.msg_id,
        partition=TP.partition,
        offset=job.offset,
        alert=job.alert,
    )
    return HeldRead({job.alert.alert_id: held}, more=False)


def test_a_message_dropped_while_the_read_back_runs_is_not_held_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The read meets the record; the message is sent and tombstoned before the read
    ends: not held again. A later message of the alert (a later offset) that the read
    meets is held."""

    async def main() -> None:
        pipe = _pipe(HeldProducer())
        generations = {TP: pipe.assignments.generation(TP)}
        reading = asyncio.Event()

        async def racing(dropped: Job, met: Job) -> None:
            """A read-back that meets `met`, `dropped` dropped while it reads."""
            read_on = asyncio.Event()
            reading.clear()

            async def read_held(*args: Any, **kwargs: Any) -> HeldRead:
                reading.set()
                await read_on.wait()
                return _as_read(pipe, met)

            monkeypatch.setattr(dispatcher, "read_held", read_held)
            restoring = asyncio.create_task(pipe._restore_held(generations))
            await asyncio.wait_for(reading.wait(), WAIT_S)
            await pipe._drop_held(dropped)
            read_on.set()
            await asyncio.wait_for(restoring, WAIT_S)

        sent = _job(pipe, 7)
        await racing(sent, sent)  # sent (its outcome recorded) meanwhile
        assert pipe.held == {}

        later = _job(pipe, 9, released=False)  # the alert escalated, silenced again
        await racing(sent, later)
        assert pipe.held[later.alert.alert_id].offset == 9

    asyncio.run(main())


def test_a_message_whose_tombstone_is_being_written_when_the_read_begins_is_not_held_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tombstone is on its way to Kafka (not acknowledged) when the read-back begins,
    and the read meets the topic before it: the message is not held again."""

    async def main() -> None:
        producer = HeldProducer()
        pipe = _pipe(producer)
        sent = _job(pipe, 7)

        async def read_held(*args: Any, **kwargs: Any) -> HeldRead:
            return _as_read(pipe, sent)

        monkeypatch.setattr(dispatcher, "read_held", read_held)
        producer.gate.clear()
        dropping = asyncio.create_task(pipe._drop_held(sent))
        await asyncio.wait_for(producer.entered.wait(), WAIT_S)
        generations = {TP: pipe.assignments.generation(TP)}
        await asyncio.wait_for(pipe._restore_held(generations), WAIT_S)
        assert pipe.held == {}
        producer.gate.set()
        await asyncio.wait_for(dropping, WAIT_S)
        assert len(producer.tombstones) == 1
        assert pipe._tombstoning == {}  # (forgotten once written)

    asyncio.run(main())
