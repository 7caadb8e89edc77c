"""`TopicReader` with `own_deadlines=False` (the notifier's held messages,
`webhooks.held.read_held`): no deadline of its own and Kafka's errors as they are, for a
caller that bounds the whole read; with its own (a command's read), each step Kafka does
not answer is one line naming it. No Kafka: the reader's consumer stands in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks import topic_read
from sinks.topic_read import TopicReader, TopicUnreadable
from sinks.webhooks.held import read_held

KAFKA = Kafka("127.0.0.1:9")


class _Consumer:
    """Answers the reader's start and assignment; its end offsets fail or never come."""

    def __init__(self, offsets: str) -> None:
        self.offsets = offsets
        self.stopped = False

    async def start(self) -> None:
        pass

    def assign(self, _partitions: object) -> None:
        pass

    async def end_offsets(self, _partitions: object) -> Any:
        if self.offsets == "refused":
            raise KafkaConnectionError("refused")
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped = True


def _standing_in(monkeypatch: pytest.MonkeyPatch, offsets: str) -> list[_Consumer]:
    made: list[_Consumer] = []

    def new_consumer(*_args: object, **_config: object) -> _Consumer:
        made.append(_Consumer(offsets))
        return made[-1]

    monkeypatch.setattr(topic_read, "new_consumer", new_consumer)
    return made


async def _read(own_deadlines: bool, within_s: float) -> None:
    async with (
        deadline(within_s),
        TopicReader(KAFKA, "t", 1, stall_s=0.05, close_s=1, own_deadlines=own_deadlines) as reader,
    ):
        await reader.to_end()


def test_a_kafka_error_is_kept_as_it_is_without_the_readers_own_deadlines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _standing_in(monkeypatch, "refused")
    with pytest.raises(KafkaConnectionError):
        asyncio.run(_read(own_deadlines=False, within_s=5))
    with pytest.raises(TopicUnreadable, match=r"did not give the end offsets of t \(Kafka"):
        asyncio.run(_read(own_deadlines=True, within_s=5))


def test_a_step_kafka_does_not_answer_is_the_callers_deadline_without_the_readers_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _standing_in(monkeypatch, "never")
    with pytest.raises(TimeoutError):  # not cut at stall_s (0.05 s): the caller's 0.5 s
        asyncio.run(_read(own_deadlines=False, within_s=0.5))
    with pytest.raises(TopicUnreadable, match=r"did not give the end offsets of t within"):
        asyncio.run(_read(own_deadlines=True, within_s=5))


@pytest.mark.parametrize(
    ("offsets", "raised"), [("refused", KafkaConnectionError), ("never", TimeoutError)]
)
def test_reading_what_is_held_fails_as_before_and_closes_its_reader(
    monkeypatch: pytest.MonkeyPatch, offsets: str, raised: type[Exception]
) -> None:
    """`read_held`'s caller logs the error's type and reads again: a Kafka error as it
    is, `TimeoutError` past `call_s` for the whole read."""
    made = _standing_in(monkeypatch, offsets)
    with pytest.raises(raised):
        asyncio.run(read_held(KAFKA, "webhook-held", 1, "ops", {0}, call_s=0.2, limit=10))
    assert made[0].stopped
