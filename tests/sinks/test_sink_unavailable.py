"""ClickHouse unavailable: the sink waits without losing or duplicating anything."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from readable import line_within
from samples import scan_json
from sink_harness import SinkProcess, prepare_all_topics, publish, wait_for

from chainwatch.free_port import free_port
from chainwatch.settings import Settings, child_environment
from chainwatch.sink_runner import build_mappers
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.sink import ClickHouseSink, SinkConfig
from streams.topics import SCANS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOLD_STORE = (
    "import sys\n"
    "from chainwatch.settings import Settings\n"
    "from sinks.clickhouse.connection import open_client\n"
    "client = open_client(Settings())\n"
    "print('holding', flush=True)\n"
    "sys.stdin.read()\n"
    "client.close()\n"
)


def _scan_count(settings: Settings) -> tuple[int, int]:
    client = open_client(settings)
    try:
        n, distinct = client.query("SELECT count(), uniqExact(event_id) FROM scans").result_rows[0]
    finally:
        client.close()
    return int(n), int(distinct)


def test_embedded_store_locked_by_another_process_then_released(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)
    # a Popen context: its pipes are closed on exit (the store owner's in test_clickhouse_access)
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE],
        env=child_environment(settings, os.environ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert line_within(holder.stdout, 60, "the store holder").strip() == b"holding"
            publish(settings, SCANS, ((f"PO-{i % 50}".encode(), scan_json(i)) for i in range(3000)))
            sink = SinkProcess(settings, tmp_path / "sink.log", "--drain")
            wait_for(
                lambda: sink.log().count("clickhouse_unavailable") >= 2,
                timeout_s=60,
                what="the sink to retry the locked store",
            )
            assert sink.proc.poll() is None  # waiting, not crashed
            assert holder.stdin is not None
            holder.stdin.close()  # release the store
            assert holder.wait(timeout=60) == 0
            assert sink.wait(timeout_s=120) == 0, sink.log()[-3000:]
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
    assert _scan_count(settings) == (3000, 3000)


def test_server_url_unreachable_keeps_retrying_and_commits_nothing(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    metrics_port = free_port()
    settings = settings_factory(
        clickhouse={"url": f"http://127.0.0.1:{free_port()}/cw"}, metrics_port=metrics_port
    )
    prepare_all_topics(settings)
    publish(settings, SCANS, ((f"PO-{i % 50}".encode(), scan_json(i)) for i in range(100)))
    sink = SinkProcess(settings, tmp_path / "sink.log")
    try:
        wait_for(
            lambda: sink.log().count("clickhouse_unavailable") >= 3,
            timeout_s=60,
            what="three retries against the closed port",
        )
        assert sink.proc.poll() is None
        # what ChainwatchSinkPaused watches: a sink started while ClickHouse is down
        # consumes nothing, and said 0
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "\nchainwatch_sink_paused 1.0\n" in metrics
        probe = KafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap,
            group_id=f"{settings.engine.app_id}-clickhouse-sink",
            enable_auto_commit=False,
        )
        try:
            topic = settings.kafka.topic(SCANS)
            committed = [probe.committed(TopicPartition(topic, p)) for p in range(4)]
        finally:
            probe.close()
        assert committed == [None] * 4
        assert "password" not in sink.log()
    finally:
        sink.proc.terminate()
        assert sink.wait(timeout_s=60) == 0, sink.log()[-2000:]


class _Outage:
    """A store that refuses inserts while `down` is set (a server going away mid-run)."""

    def __init__(self, client: SerializedClient) -> None:
        self.client = client
        self.down = threading.Event()
        self.refused = 0

    def insert(self, table: str, rows: Any, **kwargs: Any) -> Any:
        if self.down.is_set():
            self.refused += 1
            raise ConnectionError("ClickHouse is down")
        return self.client.insert(table, rows, **kwargs)

    def query(self, sql: str, **kwargs: Any) -> Any:
        if self.down.is_set():
            raise ConnectionError("ClickHouse is down")
        return self.client.query(sql, **kwargs)


def test_outage_mid_run_pauses_consumption_then_drains_backlog(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    prepare_all_topics(settings)
    client = SerializedClient(open_client(settings))
    migrate(client, settings)
    store = _Outage(client)
    sink = ClickHouseSink(
        bootstrap=settings.kafka.bootstrap,
        group_id=f"{settings.engine.app_id}-outage",
        client=store,
        mappers=build_mappers(settings),
        config=SinkConfig(
            flush_rows=500, flush_interval_s=0.1, max_buffer_rows=2000, max_backoff_s=0.5
        ),
    )

    def stored() -> int:
        return int(client.query("SELECT count() FROM scans").result_rows[0][0])

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        await asyncio.to_thread(
            publish, settings, SCANS, ((f"PO-{i % 50}".encode(), scan_json(i)) for i in range(1000))
        )
        await asyncio.to_thread(wait_for, lambda: stored() == 1000, 60, "the first 1000 scans")
        store.down.set()
        await asyncio.to_thread(
            publish,
            settings,
            SCANS,
            ((f"PO-{i % 50}".encode(), scan_json(i)) for i in range(1000, 9000)),
        )
        await asyncio.to_thread(wait_for, lambda: store.refused >= 3, 60, "refused inserts")
        paused_at = sink.stats.max_buffered_rows
        assert sink.buffered_rows <= 2000 + 500  # bounded: the limit plus one fetch
        await asyncio.sleep(0.5)
        assert sink.stats.max_buffered_rows == paused_at  # nothing more fetched while down
        store.down.clear()
        await asyncio.to_thread(wait_for, lambda: stored() >= 9000, 120, "the backlog")
        stop.set()
        await task

    try:
        asyncio.run(scenario())
        assert sink.stats.max_buffered_rows <= 2500
        assert stored() == 9000
        distinct = client.query("SELECT uniqExact(event_id) FROM scans").result_rows[0][0]
        assert distinct == 9000
    finally:
        client.close()
