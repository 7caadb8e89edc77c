"""Long-running processes: the stream worker and the ClickHouse sink.

Each runner builds what it needs from the settings, runs until SIGINT/SIGTERM,
and releases everything it opened (the embedded store lock above all).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from chainwatch.kafka_admin import ensure_topics
from chainwatch.logs import get_logger
from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.query_server import QueryServer
from sinks.clickhouse.rows import ScanRows
from sinks.clickhouse.sink import ClickHouseSink, SinkStats
from streams.app import create_app
from streams.stage_counts import register_stage_counts
from streams.topics import INPUT_TOPICS, OUTPUT_TOPICS, SCANS, TopicNames

log = get_logger(__name__)


def topic_names(settings: Settings) -> TopicNames:
    return TopicNames(settings.kafka.topic_prefix)


def prepare_topics(settings: Settings) -> None:
    ensure_topics(
        settings.kafka.bootstrap,
        topic_names(settings),
        (*INPUT_TOPICS, *OUTPUT_TOPICS),
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
    )


def run_worker(settings: Settings) -> None:
    """Run the faust worker in this process until it is told to stop."""
    import faust

    prepare_topics(settings)
    app = create_app(
        settings.engine.app_id,
        bootstrap=settings.kafka.bootstrap,
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        data_dir=settings.data_path / "faust",
        store=settings.engine.store,
    )
    register_stage_counts(app, topic_names(settings))
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()


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
