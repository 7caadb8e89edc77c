"""Every way out of an endpoint's run stops what it started: the warm-up, the HTTP client.

A subscribed consumer's `start` waits for its first assignment, and the rebalance
listener starts the warm-up inside it (`on_partitions_assigned`). A start that then
raised (a stalled drain's `KafkaStalled`, a Kafka error) or was cancelled left that
warm-up's task running and the endpoint's HTTP client open (its pool, its resolver's
threads): in a long-running notifier that restarts a pipe, a task and a pool lost each
time. And the stop's waits for them had no bound: a cancel swallowed by third-party
code, or a close that hangs, held the notifier's stop for ever.

The consumer here is a stand-in (webhook_pipes.py); the real broker's start and stop:
tests/sinks/test_webhook_delivery.py and tests/sinks/test_consumer_stop.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from webhook_pipes import FakeConsumer, LogProducer, offline_pipe

from sinks.consumer import KafkaStalled
from sinks.webhooks import delivery, dispatcher, warmup
from sinks.webhooks.dispatcher import EndpointPipe
from sinks.webhooks.targets import TargetPolicy

TP = TopicPartition("cw.alerts", 0)


class _Idle(FakeConsumer):
    """The endpoint's consumer once started: assigned `TP`, nothing to read."""

    def __init__(self) -> None:
        super().__init__([TP])

    def subscribe(self, topics: Any, listener: Any) -> None:
        return None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        await asyncio.sleep(timeout_ms / 1000)  # a poll with nothing to read
        return {}

    async def stop(self) -> None:
        return None


class _Setup:
    """One endpoint whose consumer's start assigns `TP` (the warm-up starts) and then does
    what `start` is told; the warm-up's read-back waits until cancelled, or with
    `stubborn` swallows its first cancel (as aiokafka's closes do) until `released`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, start: str) -> None:
        self.pipe: EndpointPipe = offline_pipe(name)
        self.pipe.producer = LogProducer()  # type: ignore[assignment]
        self.consumer = _Idle()
        self.start = start
        self.stubborn = False
        self.reading = asyncio.Event()
        self.released = asyncio.Event()
        self.clients: list[httpx.AsyncClient] = []
        """Every worker's HTTP client the endpoint made."""
        self.warm_up: asyncio.Task[Any] | None = None
        monkeypatch.setattr(dispatcher, "new_consumer", lambda *_a, **_k: self.consumer)
        monkeypatch.setattr(dispatcher, "start_consumer", self._start_consumer)
        monkeypatch.setattr(dispatcher, "WorkerClients", self._worker_clients)
        monkeypatch.setattr(warmup, "read_back", self._read_back)

    def _worker_clients(self, *args: Any, **kwargs: Any) -> delivery.WorkerClients:
        clients = delivery.WorkerClients(*args, **kwargs)
        self.clients.extend(clients.each)
        return clients

    async def _start_consumer(self, _consumer: Any, stop: asyncio.Event, _waits: Any) -> bool:
        self.pipe.warmup.start(self.consumer, [TP])  # the first assignment, inside `start`
        await self.reading.wait()
        if self.start == "raises":
            raise KafkaStalled("Kafka at unused:9092 gave no assignment for 60 s")
        if self.start == "stopped":
            stop.set()
            return False
        if self.start == "waits":
            await asyncio.Event().wait()  # until our task is cancelled
        return True

    async def _read_back(self, *_args: Any, **_kwargs: Any) -> None:
        self.warm_up = asyncio.current_task()
        self.reading.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not self.stubborn:
                raise
            await self.released.wait()

    def left_open(self) -> list[str]:
        """What the run left behind it (empty: it stopped everything it started)."""
        left = [f"HTTP client {i}" for i, c in enumerate(self.clients) if not c.is_closed]
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return left + [f"task {t.get_name()}" for t in tasks]


def test_a_start_that_raises_stops_the_warm_up_and_closes_the_http_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = _Setup(monkeypatch, "start-raises", "raises")

    async def run() -> list[str]:
        async with asyncio.timeout(10):
            with pytest.raises(KafkaStalled):
                await setup.pipe.run(asyncio.Event(), drain=True)
        await asyncio.sleep(0)  # a task cancelled and not awaited would end now, not before
        return setup.left_open()

    assert asyncio.run(run()) == []


def test_a_start_cancelled_stops_the_warm_up_and_closes_the_http_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = _Setup(monkeypatch, "start-cancelled", "waits")

    async def run() -> list[str]:
        running = asyncio.create_task(setup.pipe.run(asyncio.Event()))
        async with asyncio.timeout(10):
            await setup.reading.wait()  # the warm-up reads back, the start waits on
            running.cancel()
            await asyncio.wait({running})
        assert running.cancelled()
        await asyncio.sleep(0)
        return setup.left_open()

    assert asyncio.run(run()) == []


def test_a_stop_during_the_start_stops_the_warm_up_and_closes_the_http_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = _Setup(monkeypatch, "start-stopped", "stopped")

    async def run() -> list[str]:
        async with asyncio.timeout(10):
            await setup.pipe.run(asyncio.Event())
        await asyncio.sleep(0)
        return setup.left_open()

    assert asyncio.run(run()) == []


@pytest.mark.parametrize("start", ["raises", "started"])
def test_a_warm_up_that_swallows_its_cancel_holds_the_endpoints_end_only_so_long(
    monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """A start that failed, and the ordinary stop of a started endpoint: each waited
    for the cancelled warm-up for ever."""
    setup = _Setup(monkeypatch, f"stubborn-warm-up-{start}", start)
    setup.stubborn = True
    monkeypatch.setattr(warmup, "CANCEL_WAIT_S", 0.2)

    async def run() -> list[str]:
        stop = asyncio.Event()
        running = asyncio.create_task(setup.pipe.run(stop))
        async with asyncio.timeout(5):
            await setup.reading.wait()
            stop.set()
            await asyncio.wait({running})
        task = setup.warm_up
        assert task is not None
        assert not task.done()  # still in its swallowed cancel: left behind, not awaited
        setup.released.set()
        await asyncio.wait({task}, timeout=5)
        if start == "raises":
            assert isinstance(running.exception(), KafkaStalled)
        else:
            assert running.exception() is None
        return setup.left_open()

    assert asyncio.run(run()) == []


class _HangingClose(delivery.WorkerClients):
    """HTTP clients whose close never ends until `released` (a pool stuck closing)."""

    def __init__(self) -> None:
        super().__init__(delivery.RetryPolicy(), targets=TargetPolicy(), workers=2)
        self.released = asyncio.Event()
        self.closed = asyncio.Event()

    async def aclose(self) -> None:
        await self.released.wait()
        await super().aclose()
        self.closed.set()


def test_a_hanging_http_close_holds_an_endpoints_stop_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = _Setup(monkeypatch, "hanging-close", "started")
    monkeypatch.setattr(delivery, "CLIENT_CLOSE_S", 0.2)

    async def run() -> None:
        client = _HangingClose()
        monkeypatch.setattr(dispatcher, "WorkerClients", lambda *_a, **_k: client)
        stop = asyncio.Event()
        running = asyncio.create_task(setup.pipe.run(stop))
        async with asyncio.timeout(5):
            await setup.reading.wait()
            stop.set()
            await running
        assert not any(c.is_closed for c in client.each)  # left to end on its own
        client.released.set()
        async with asyncio.timeout(5):
            await client.closed.wait()  # the close went on, in its own task

    asyncio.run(run())
