"""The gateway's lifespan (streams.ingest.app), without Kafka or a server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway_harness import make_registry

from chainwatch.settings import Settings
from streams.ingest.app import create_gateway_app
from streams.ingest.publisher import GroupObserver
from streams.ingest.records import OutRecord, Placement


class Publisher:
    """Ready at once; says whether it was stopped."""

    def __init__(self) -> None:
        self.stopped = False

    def observe_groups(self, observer: GroupObserver) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def ready(self) -> bool:
        return True

    async def publish(
        self, records: Sequence[OutRecord], within_s: float | None = None
    ) -> list[Placement]:
        raise AssertionError("nothing is published here")


class SlowToStop:
    """Topics still being prepared, whose preparation takes a while to end once cancelled
    (an admin client's close) until `release`."""

    def __init__(self) -> None:
        self.running, self.cleaning, self.release = (
            asyncio.Event(),
            asyncio.Event(),
            asyncio.Event(),
        )

    def waiting_for(self) -> str | None:
        return "Kafka at nowhere"

    async def prepared(self) -> None:
        await asyncio.Event().wait()

    async def run(self) -> None:
        self.running.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.cleaning.set()
            await self.release.wait()


def test_a_cancel_during_the_shutdown_is_handed_on_once_the_shutdown_is_done() -> None:
    """The shutdown suppressed the `CancelledError` of the topic preparation it cancelled,
    and with it a cancel of its own task meanwhile: the task went on as if never cancelled.
    The shutdown still ends the readiness task and stops the publisher first."""

    async def scenario() -> tuple[str, bool]:
        publisher, preparation = Publisher(), SlowToStop()
        app = create_gateway_app(
            Settings(), make_registry(), producer=publisher, preparation=preparation
        )
        serving, stop = asyncio.Event(), asyncio.Event()

        async def lifespan() -> str:
            async with app.router.lifespan_context(app):
                serving.set()
                await stop.wait()
            return "ran on"

        task = asyncio.ensure_future(lifespan())
        async with asyncio.timeout(5):
            await serving.wait()
            await preparation.running.wait()
        stop.set()  # the shutdown: it cancels the preparation and waits for it
        async with asyncio.timeout(5):
            await preparation.cleaning.wait()
        task.cancel()
        preparation.release.set()
        async with asyncio.timeout(5):
            await asyncio.wait({task})
        return ("cancelled" if task.cancelled() else task.result()), publisher.stopped

    assert asyncio.run(scenario()) == ("cancelled", True)
