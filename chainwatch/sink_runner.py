"""The ClickHouse sink process: owns the store, serves local reads, sinks topics.

Runs until SIGINT/SIGTERM (or, with `drain`, until caught up) and releases the
embedded store lock on the way out.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from chainwatch.logs import get_logger
from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.query_server import QueryServer
from sinks.clickhouse.rows import ScanRows
from sinks.clickhouse.sink import ClickHouseSink, SinkStats
from streams.topics import SCANS

log = get_logger(__name__)


def run_sink(
    settings: Settings,
    *,
    drain: bool = False,
    on_flush: Callable[[SinkStats], None] | None = None,
) -> SinkStats:
    """Own the store, serve local read queries, and sink topics until stopped."""
    prepare_topics(settings)
    client = SerializedClient(open_client(settings))
    server: QueryServer | None = None
    try:
        migrate(client, settings)
        if settings.clickhouse.is_embedded:
            server = QueryServer(client, settings.clickhouse_dir, settings.clickhouse.query_port)
            server.start()
        names = topic_names(settings)
        sink = ClickHouseSink(
            bootstrap=settings.kafka.bootstrap,
            group_id=f"{settings.engine.app_id}-clickhouse-sink",
            client=client,
            writers={names(SCANS): ScanRows()},
            on_flush=on_flush,
        )
        return asyncio.run(_until_signalled(sink, drain=drain))
    finally:
        if server is not None:
            server.stop()
        client.close()


async def _until_signalled(sink: ClickHouseSink, *, drain: bool) -> SinkStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = await sink.run(stop, drain=drain)
    log.info("sink_stopped", rows=stats.rows_written, batches=stats.batches)
    return stats
