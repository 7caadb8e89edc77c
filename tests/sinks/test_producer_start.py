"""An idempotent producer's start has a deadline (sinks.producer_start).

aiokafka's `start()` with `enable_idempotence` asks for a producer id in a loop
without end: a broker that answered the bootstrap and then stalls kept the
notifier and the replay waiting for ever. The producers here are stand-ins whose
start never returns, as aiokafka's does then; no Kafka is needed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, UnsupportedVersionError
from cancellation import FinishesInOneTurn, cancelled_as_it_finishes

from chainwatch import replay
from chainwatch.errors import USER_ERRORS
from chainwatch.settings import Settings
from sinks import producer_start
from sinks.producer_start import ProducerStartFailed, start_producer
from sinks.webhooks import log_producer
from sinks.webhooks.delivery import RetryPolicy
from sinks.webhooks.dispatcher import Topics
from sinks.webhooks.notifier import Notifier
from sinks.webhooks.targets import TargetPolicy, parse_networks

BOUND_S = 10.0
"""What a test waits at most before it fails instead of hanging."""


class NeverStarts:
    """A producer whose start waits for a producer id that never comes."""

    instances: list[NeverStarts] = []

    def __init__(self, **_: Any) -> None:
        self.stopped = 0
        NeverStarts.instances.append(self)

    async def start(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped += 1


class Starts(NeverStarts):
    async def start(self) -> None:
        return None


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_start, "START_TIMEOUT_S", 0.2)
    NeverStarts.instances.clear()


def test_a_start_that_never_ends_is_a_clear_error_after_its_deadline() -> None:
    producer = NeverStarts()
    started = time.monotonic()
    with pytest.raises(ProducerStartFailed) as failed:
        asyncio.run(asyncio.wait_for(start_producer(producer, "broker:9092"), BOUND_S))  # type: ignore[arg-type]
    assert time.monotonic() - started < BOUND_S / 2
    message = str(failed.value)
    assert "Kafka at broker:9092 did not let a producer start within 0.2 s" in message
    assert "\n" not in message
    assert isinstance(failed.value, USER_ERRORS)  # the CLI's one line, not a traceback
    assert producer.stopped == 1  # not left half started


class Refused(NeverStarts):
    def __init__(self, error: Exception, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    async def start(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (KafkaConnectionError("Unable to bootstrap from [('broker', 9092)]"), "could not connect"),
        (ConnectionRefusedError(111, "Connection refused"), "could not connect"),
        (UnsupportedVersionError("no InitProducerId"), "refused a producer's start"),
    ],
)
def test_a_start_that_fails_at_once_says_what_happened_not_a_deadline(
    error: Exception, said: str
) -> None:
    producer = Refused(error)
    with pytest.raises(ProducerStartFailed) as failed:
        asyncio.run(asyncio.wait_for(start_producer(producer, "broker:9092"), BOUND_S))  # type: ignore[arg-type]
    message = str(failed.value)
    assert said in message
    assert "broker:9092" in message
    assert "within" not in message  # it did not wait 30 s: it failed at once
    assert type(error).__name__ in message
    assert "\n" not in message
    assert producer.stopped == 1


def test_a_stop_ends_the_wait_at_once_and_a_start_that_answers_starts() -> None:
    async def stopped_meanwhile() -> bool:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await start_producer(NeverStarts(), "b:9092", stop=stop, timeout_s=BOUND_S)  # type: ignore[arg-type]

    assert asyncio.run(asyncio.wait_for(stopped_meanwhile(), BOUND_S)) is False
    assert NeverStarts.instances[-1].stopped == 1
    assert asyncio.run(start_producer(Starts(), "b:9092", stop=asyncio.Event())) is True  # type: ignore[arg-type]


def _notifier() -> Notifier:
    return Notifier(
        bootstrap="broker:9092",
        group_id="cw-notify",
        topics=Topics("cw.alerts", "cw.webhook-deliveries", "cw.webhook-dead-letter"),
        endpoints=[],
        policy=RetryPolicy(),
        targets=TargetPolicy(parse_networks("")),
    )


def test_the_notifier_fails_clearly_when_its_producer_never_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(log_producer, "AIOKafkaProducer", NeverStarts)
    with pytest.raises(ProducerStartFailed, match="broker:9092"):
        asyncio.run(asyncio.wait_for(_notifier().run(asyncio.Event()), BOUND_S))


def test_the_notifier_stops_when_told_while_its_producer_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(log_producer, "AIOKafkaProducer", NeverStarts)
    monkeypatch.setattr(producer_start, "START_TIMEOUT_S", 60.0)

    async def main() -> Any:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await _notifier().run(stop)

    stats = asyncio.run(asyncio.wait_for(main(), BOUND_S))
    assert stats.delivered == 0
    assert [p.stopped for p in NeverStarts.instances] == [1]  # its start not left running


def test_the_replay_fails_clearly_when_its_producer_never_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(replay, "AIOKafkaProducer", NeverStarts)
    settings = Settings(data_dir=tmp_path, kafka={"bootstrap_servers": "broker:9092"})
    scenario = tmp_path / "scenario.ndjson"
    scenario.write_text("")
    with pytest.raises(ProducerStartFailed):
        asyncio.run(asyncio.wait_for(replay.send_final_clock(settings, 0), BOUND_S))
    publishing = replay.publish_scenario(settings, scenario, lambda *_a, **_k: None)
    with pytest.raises(ProducerStartFailed):
        asyncio.run(asyncio.wait_for(publishing, BOUND_S))


class NeverAcknowledges(Starts):
    async def send_and_wait(self, *_: Any, **__: Any) -> None:
        await asyncio.Event().wait()


def test_the_replays_final_clock_has_a_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(replay, "AIOKafkaProducer", NeverAcknowledges)
    monkeypatch.setattr(replay, "FINAL_CLOCK_TIMEOUT_S", 0.2)
    settings = Settings(data_dir=tmp_path, kafka={"bootstrap_servers": "broker:9092"})
    with pytest.raises(USER_ERRORS, match="did not acknowledge the final clock"):
        asyncio.run(asyncio.wait_for(replay.send_final_clock(settings, 0), BOUND_S))
    assert NeverAcknowledges.instances[-1].stopped == 1


def test_a_cancellation_as_the_producer_stop_finishes_is_not_dropped() -> None:
    """Python 3.11's `wait_for` returned the result of a call that finished in the turn
    it was cancelled, and dropped the cancellation: a Ctrl-C then went unseen."""

    async def interrupted() -> str:
        producer = FinishesInOneTurn()

        return await cancelled_as_it_finishes(
            lambda: producer_start.stop_producer(producer),  # type: ignore[arg-type]
            producer.done,
        )

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted())
