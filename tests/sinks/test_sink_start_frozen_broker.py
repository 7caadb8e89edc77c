"""The sink told to stop while its start asks a frozen broker for its identities.

Once the store is open the sink asks Kafka for the cluster's and its topics' ids
(`chainwatch.kafka_admin.kafka_identities`, compared with the store's offsets). That
look-up ran in `asyncio.to_thread`: a Ctrl-C or SIGTERM while the broker did not answer
(frozen here, with SIGSTOP: `freezable_broker`, thawed before the test ends) waited out
the admin client's connection deadline (20 s) and then failed the start, or the stop
deadline cut the sink with exit 1. The look-up's answer is of no use once stopping: it
now runs on a daemon thread that the stop does not wait for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from dead_servers import outcome_within
from sink_harness import wait_for

from chainwatch.local_kafka import BrokerStatus
from chainwatch.settings import Settings
from chainwatch.sink_runner import _main, build_mappers
from sinks.clickhouse.sink import SinkStats

pytestmark = pytest.mark.integration


def _looking_up() -> bool:
    """Whether a thread is in `kafka_identities` now."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == "kafka_identities":
                return True
            frame = frame.f_back  # type: ignore[assignment]
    return False


def test_the_sink_told_to_stop_while_a_frozen_broker_holds_its_start_stops_at_once(
    freezable_broker: BrokerStatus, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", kafka={"bootstrap_servers": freezable_broker.bootstrap}
    )
    mappers = build_mappers(settings)

    async def signalled_meanwhile() -> tuple[SinkStats, float]:
        stop = asyncio.Event()
        running = asyncio.ensure_future(
            _main(
                settings, stop, drain=False, on_flush=None, mappers=mappers,
                new_kafka_epoch=False,
            )
        )  # fmt: skip
        await asyncio.to_thread(wait_for, _looking_up, 60, "the look-up of Kafka's ids")
        stop.set()
        started = time.monotonic()
        stats = await running
        return stats, time.monotonic() - started

    assert freezable_broker.pid is not None
    os.kill(freezable_broker.pid, signal.SIGSTOP)
    try:
        outcome = outcome_within(120, lambda: asyncio.run(signalled_meanwhile()))
    finally:
        os.kill(freezable_broker.pid, signal.SIGCONT)
    # before: the start failed 20 s later (Kafka did not answer), or the stop was cut
    assert not isinstance(outcome, BaseException), outcome
    stats, took = outcome
    assert stats == SinkStats()
    assert took < 3
