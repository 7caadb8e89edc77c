"""The ClickHouse sink process: owns the store, serves local reads, sinks topics.

Runs until SIGINT/SIGTERM (or, with `drain`, until caught up; `chainwatch.process`;
its stop takes at most `engine.stop_timeout_s`, then it exits 1) and releases the
embedded store lock on the way out. A store that cannot be opened yet (the embedded
one locked by another process, a server that is down) is retried with backoff:
nothing is consumed meanwhile, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import TypeVar

from clickhouse_connect.driver.exceptions import OperationalError

from chainwatch.kafka_admin import kafka_identities, retry_until_reachable
from chainwatch.logs import get_logger
from chainwatch.process import Startup, run_until_signalled, serve_metrics, waiting_before_main
from chainwatch.runners import prepare_topics, topic_names
from chainwatch.settings import Settings
from chainwatch.topic_partitions import check_partitions, input_topics
from schemas.plan import load_plan
from sinks.backoff import Backoff
from sinks.clickhouse import metrics as sink_metrics
from sinks.clickhouse.connection import (
    CONNECT_DEADLINE_S,
    SerializedClient,
    StoreUnavailable,
    open_client,
    open_own_handle,
)
from sinks.clickhouse.deadline_pool import Deadlines, deadlines_of
from sinks.clickhouse.kafka_source import resolve_offset_bases
from sinks.clickhouse.mapping import RecordMapper
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.query_server import QueryServer
from sinks.clickhouse.read_only import ReadOnlyQueries
from sinks.clickhouse.rows import CustomerRows, OrderEventRows, ScanRows, UnitStatusRows
from sinks.clickhouse.rows_outputs import (
    AlertRows,
    DeadLetterRows,
    DeliveryLogRows,
    OrderStateRows,
)
from sinks.clickhouse.sink import ClickHouseSink, SinkConfig, SinkStats
from sinks.daemon_executor import to_daemon_thread
from sinks.stop_race import stopped_first, unless_stopped
from sinks.webhooks.records import DELIVERIES_TOPIC, NOTIFY_TOPICS
from streams.partitioning import partition_of
from streams.topics import ALERTS, CUSTOMERS, DEAD_LETTER, ORDER_STATE, ORDERS, SCANS, UNIT_STATUS

log = get_logger(__name__)


def build_mappers(settings: Settings) -> dict[str, RecordMapper]:
    """Every topic the sink stores, under the deployment's topic names."""
    names = topic_names(settings)
    plan = load_plan(settings.engine.plan)
    partitions = settings.kafka.partitions

    def home(key: bytes) -> int:
        return partition_of(key, partitions)

    return {
        names(ORDERS): OrderEventRows(plan, home),
        names(CUSTOMERS): CustomerRows(plan, home),
        names(SCANS): ScanRows(plan, home),
        names(UNIT_STATUS): UnitStatusRows(plan, home),
        names(ORDER_STATE): OrderStateRows(plan),
        names(ALERTS): AlertRows(),
        names(DEAD_LETTER): DeadLetterRows(),
        names(DELIVERIES_TOPIC): DeliveryLogRows(),
    }


def prepare_sink_topics(settings: Settings) -> None:
    """`PartitionsMismatch` if an input topic has another count than `kafka.partitions` (its
    mappers dead-letter a record read from another partition than its id's;
    chainwatch.topic_partitions), else the topics the sink reads, created when missing.
    Checked first, so a refused start creates nothing with the count it refused."""
    kafka = settings.kafka
    check_partitions(
        kafka.endpoint,
        input_topics(settings),
        kafka.partitions,
        request_timeout_s=kafka.request_timeout_s,
    )
    prepare_topics(settings, also=NOTIFY_TOPICS)


def run_sink(
    settings: Settings,
    *,
    drain: bool = False,
    on_flush: Callable[[SinkStats], None] | None = None,
    mappers: Mapping[str, RecordMapper] | None = None,
    new_kafka_epoch: bool = False,
) -> SinkStats:
    """Own the store, serve local read queries, and sink topics until stopped.

    Refuses to start (`KafkaChanged`) when the broker is not the one the store's
    offsets came from, unless `new_kafka_epoch` (see `sinks/clickhouse/kafka_source.py`).
    """
    # the plan first: a bad one is the command's one line, before the process says it starts
    stored = mappers if mappers is not None else build_mappers(settings)
    sink_metrics.start_series(
        stored,
        [t for t in input_topics(settings) if t in stored],
        {table.name for mapper in stored.values() for table in mapper.tables},
    )
    startup = Startup(f"Kafka at {settings.kafka.bootstrap}")
    ops = serve_metrics(settings, startup)  # probes answer while it waits for Kafka
    with waiting_before_main("sink", ops) as waited:
        retry_until_reachable(lambda: prepare_sink_topics(settings), process="sink", wait=not drain)
    if waited.stopped:
        return SinkStats()
    startup.waiting_for = "ClickHouse"
    with startup.watching_kafka(settings.kafka, ops):
        return run_until_signalled(
            "sink",
            lambda stop: _main(
                settings,
                stop,
                drain=drain,
                on_flush=on_flush,
                mappers=stored,
                new_kafka_epoch=new_kafka_epoch,
                startup=startup,
            ),
            ops=ops,
            announced=True,
            stop_timeout_s=settings.engine.stop_timeout_s,
        )


T = TypeVar("T")


class _Stopped(Exception):
    """`stop` came while a call to ClickHouse was under way (it was aborted)."""


async def _unless_stopped(
    stop: asyncio.Event,
    deadlines: Deadlines | None,
    call: Callable[[], T],
    *,
    discard: Callable[[T], object] | None = None,
) -> T:
    """`call()` on a thread, or `_Stopped` as soon as `stop` is set: a server's requests
    under way are aborted (`Deadlines.abort`), so the thread ends at once instead of at
    their deadlines, and the start of a sink signalled while ClickHouse trickles ends.
    An embedded chDB's call cannot be aborted: it is waited for, then `_Stopped` all the
    same (`stop_race.unless_stopped`: nothing more is started once stopping); what it
    answered is given to `discard` (a store opened: closed)."""
    return await unless_stopped(
        call,
        stop,
        abort=None if deadlines is None else deadlines.abort,
        stopped=_Stopped,
        answer_unabortable=False,
        discard=discard,
    )


async def _looked_up_unless_stopped(
    stop: asyncio.Event, call: Callable[[], T], *, thread_name: str
) -> T:
    """`call()`, a look-up whose answer is of no use once stopping, on a daemon thread, or
    `_Stopped` as soon as `stop` is set: the thread is left to end by itself, never waited
    for. (The Kafka identities ran in `asyncio.to_thread`: a Ctrl-C while a broker did not
    answer waited out the admin client's connection and calls, 20 s each, and the stop
    deadline cut the sink at 30 s with exit 1.)"""
    work = asyncio.ensure_future(to_daemon_thread(call, thread_name=thread_name))
    if not await stopped_first(work, stop):
        return work.result()
    work.cancel()
    raise _Stopped


def _open_and_migrate(settings: Settings, deadlines: Deadlines) -> SerializedClient:
    client = SerializedClient(open_client(settings, deadlines=deadlines))
    try:
        migrate(client, settings)
    except BaseException:
        client.close()
        raise
    return client


async def _open_store(settings: Settings, stop: asyncio.Event) -> SerializedClient | None:
    """The store, opened and migrated, retried until it is (None: `stop` came first);
    `chainwatch_sink_paused` is 1 meanwhile, as for an outage once running: a sink that
    (re)starts while ClickHouse is down consumes nothing, and the alert on the gauge
    (ChainwatchSinkPaused) is the one that says so."""
    backoff = Backoff(0.2, settings.sink.max_backoff_s)
    delay = backoff.next()
    while not stop.is_set():
        deadlines = Deadlines(CONNECT_DEADLINE_S, str(settings.clickhouse.redacted_url()))
        try:
            client = await _unless_stopped(
                stop,
                deadlines,
                functools.partial(_open_and_migrate, settings, deadlines),
                discard=SerializedClient.close,  # opened as the stop came: its lock freed
            )
            sink_metrics.PAUSED.set(0)
            return client
        except _Stopped:
            return None
        except (StoreUnavailable, OperationalError) as exc:
            sink_metrics.PAUSED.set(1)
            log.warning("clickhouse_unavailable", error=str(exc), retry_in_s=delay)
        try:
            async with asyncio.timeout(delay):  # not wait_for: 3.11's may drop a cancel
                await stop.wait()
        except TimeoutError:
            delay = backoff.next()
    return None


async def _main(
    settings: Settings,
    stop: asyncio.Event,
    *,
    drain: bool,
    on_flush: Callable[[SinkStats], None] | None,
    mappers: Mapping[str, RecordMapper],
    new_kafka_epoch: bool,
    startup: Startup | None = None,
) -> SinkStats:
    client = await _open_store(settings, stop)
    if client is None:
        return SinkStats()
    if startup is not None:
        startup.waiting_for = None
    server: QueryServer | None = None
    try:
        try:
            identities = await _looked_up_unless_stopped(
                stop,
                functools.partial(
                    kafka_identities,
                    settings.kafka.endpoint,
                    mappers,
                    request_timeout_s=settings.kafka.request_timeout_s,
                ),
                thread_name="sink-kafka-identities",
            )
            bases = await _unless_stopped(
                stop,
                deadlines_of(client.client),
                lambda: resolve_offset_bases(
                    client,
                    identities,
                    {topic: [t.name for t in m.tables] for topic, m in mappers.items()},
                    new_epoch=new_kafka_epoch,
                ),
            )
        except _Stopped:
            return SinkStats()
        if settings.clickhouse.is_embedded:
            reads = ReadOnlyQueries(await asyncio.to_thread(open_own_handle, settings))
            server = QueryServer(reads, settings.clickhouse_dir, settings.clickhouse.query_port)
            server.start()
        sink = ClickHouseSink(
            bootstrap=settings.kafka.endpoint,
            group_id=f"{settings.engine.app_id}-clickhouse-sink",
            client=client,
            mappers=mappers,
            config=SinkConfig(
                flush_rows=settings.sink.flush_rows,
                flush_interval_s=settings.sink.flush_interval_s,
                max_buffer_rows=settings.sink.max_buffer_rows,
                max_buffer_bytes=settings.sink.max_buffer_bytes,
                max_backoff_s=settings.sink.max_backoff_s,
            ),
            on_flush=on_flush,
            offset_bases=bases,
        )
        stats = await sink.run(stop, drain=drain)
        log.info("sink_stopped", rows=stats.rows_written, batches=stats.batches)
        return stats
    finally:
        if server is not None:
            server.stop()
            server.queries.close()
        client.close()
