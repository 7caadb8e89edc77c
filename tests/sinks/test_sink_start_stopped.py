"""A sink stopped while it opens its embedded store frees the store: the client it opened
as the stop came is closed, so the next sink (or `chainwatch db`, a restart) can open the
same data directory at once. No Kafka: the store's opening is all it does before then."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from chainwatch import sink_runner
from chainwatch.settings import Settings
from sinks import stop_race
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.deadline_pool import Deadlines


def test_a_sink_stopped_while_it_opens_its_embedded_store_leaves_the_store_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop is set once the store is open and migrated, and the call answers only
    once the stop has won the race (`stopped_first` said so): the start ends with no
    store, and a second client opens the same embedded store. Before, the opened client
    was dropped open and the second one was refused (`StoreLocked`: the first one's lock
    on the data directory, held by this very process) as long as anything kept a
    reference to it (here the test does: CPython may otherwise close it by chance, when
    it collects it)."""
    settings = Settings(data_dir=tmp_path / "data")  # type: ignore[call-arg]
    assert settings.clickhouse.is_embedded
    opened, stop_won = threading.Event(), threading.Event()
    race = stop_race.stopped_first

    async def seen_first(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
        first = await race(work, stop)
        if first:
            stop_won.set()
        return first

    real_open = sink_runner._open_and_migrate
    kept: list[SerializedClient] = []

    def open_then_answer_after_the_stop(
        settings: Settings, deadlines: Deadlines
    ) -> SerializedClient:
        client = real_open(settings, deadlines)
        kept.append(client)  # not collected (closed by chance) before the second open
        opened.set()
        assert stop_won.wait(timeout=60)
        return client

    monkeypatch.setattr(stop_race, "stopped_first", seen_first)
    monkeypatch.setattr(sink_runner, "_open_and_migrate", open_then_answer_after_the_stop)

    async def stopped_while_opening() -> object:
        stop = asyncio.Event()
        opening = asyncio.ensure_future(sink_runner._open_store(settings, stop))
        assert await asyncio.to_thread(opened.wait, 120)
        stop.set()
        return await asyncio.wait_for(opening, timeout=60)

    assert asyncio.run(stopped_while_opening()) is None
    assert stop_won.is_set()
    open_client(settings).close()  # the next sink's: StoreLocked while the first is open
