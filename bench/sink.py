"""Sink throughput: Kafka → chDB through `chainwatch sink`'s code, next to a bare insert.

    .venv/bin/python bench/sink.py [--rows 200000] [--topics scans,alerts]

Needs a Kafka broker (CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS, else the local one,
`chainwatch kafka start`). Uses fresh topics and a temporary chDB store. Prints:
- per topic (`scans`: an input, checked against the contract; `alerts`: an
  output of the engine, checked in pydantic-core only, `sinks/clickhouse/wire.py`):
  sink rows/s (first record consumed → last batch committed) and wall rows/s
  (including consumer group join);
- bare clickhouse-connect insert rows/s of the same rows (already mapped, same
  batch size) into an identical table, in the same process; and the ratio.

Webhook deliveries have a bench of their own: bench/webhooks.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import ConsumerRecord, TopicPartition
from kafka import KafkaProducer

from chainwatch.kafka_admin import ensure_topics
from chainwatch.kafka_start import started
from chainwatch.settings import Settings
from schemas.alerts import Alert, AlertCustomer, AlertStatus, AlertType, Severity
from sinks.clickhouse.connection import SerializedClient, open_client
from sinks.clickhouse.mapping import RecordMapper, Row
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.rows import ScanRows
from sinks.clickhouse.rows_outputs import AlertRows
from sinks.clickhouse.sink import ClickHouseSink, SinkConfig
from sinks.webhooks.records import NOTIFY_TOPICS
from streams.topics import ALERTS, SCANS, TopicNames

TARGET_ROWS_S = 200_000
TARGET_RATIO = 0.5
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def scan_values(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield (
            f'{{"event_id":"ev-{i}","order_id":"PO-{i % 5000}","stage":"knitting",'
            f'"action":"{"started" if i % 2 else "completed"}","unit_id":"KNIT-{i % 8}",'
            f'"event_time":"2027-03-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",'
            f'"quantity":{i % 100}.5,"uom":"kg","lot_id":"LOT-{i % 77}",'
            '"attributes":{"gauge":12}}'
        ).encode()


def produce(bootstrap: str, topic: str, values: Iterator[tuple[bytes, bytes]]) -> int:
    producer = started(
        KafkaProducer,
        bootstrap,
        start_ms=30_000,
        acks="all",
        enable_idempotence=True,  # retries under load must not duplicate records
        linger_ms=20,
        batch_size=512 * 1024,
        compression_type=None,
    )
    n = 0
    try:
        for key, value in values:
            producer.send(topic, key=key, value=value)
            n += 1
        producer.flush(timeout=300)
    finally:
        producer.close(timeout=30)
    return n


class _TimedSink(ClickHouseSink):
    first_record_at: float | None = None
    first_record_cpu: float = 0.0
    last_commit_at: float = 0.0
    last_commit_cpu: float = 0.0

    def add_many(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if self.first_record_at is None:
            self.first_record_at = time.perf_counter()
            self.first_record_cpu = time.process_time()
        super().add_many(tp, records)

    async def _commit(self, commits: dict[TopicPartition, int]) -> None:
        await super()._commit(commits)
        self.last_commit_at = time.perf_counter()
        self.last_commit_cpu = time.process_time()


def _load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def alert_values(n: int) -> Iterator[bytes]:
    statuses = (AlertStatus.OPEN, AlertStatus.RESOLVED)
    for i in range(n):
        alert = Alert(
            alert_id=f"{i:064x}",
            type=AlertType.STAGE_OVERDUE,
            severity=Severity.CRITICAL,
            status=statuses[i % 2],
            order_id=f"PO-{i % 5000}",
            unit_id=f"KNIT-{i % 8}",
            stage="knitting",
            visit=1,
            deadline="2027-03-01T00:00:00Z",
            detected_at="2027-03-01T00:05:00Z",
            fulfilled_at="2027-03-01T02:00:00Z" if i % 2 else None,
            lateness_s=7200 if i % 2 else None,
            customer=AlertCustomer(customer_id=f"C-{i % 40}", name="Nordic Knits AB", tier="gold"),
        )
        yield alert.model_dump_json().encode()


def scan_key(i: int) -> bytes:
    return f"PO-{i % 5000}".encode()  # the contract keys scans by order_id


def alert_key(i: int) -> bytes:
    return f"{i:064x}".encode()  # ... and alerts by alert_id


BENCHES: dict[str, tuple[str, type, Any, Any]] = {
    "scans": (SCANS, ScanRows, scan_values, scan_key),
    "alerts": (ALERTS, AlertRows, alert_values, alert_key),
}


def bench_sink(
    settings: Settings, client: SerializedClient, topic: str, rows: int, batch: int
) -> float:
    contract_topic, mapper_type, values, key = BENCHES[topic]
    names = TopicNames(settings.kafka.topic_prefix)
    produce(
        settings.kafka.bootstrap,
        names(contract_topic),
        ((key(i), v) for i, v in enumerate(values(rows))),
    )
    mapper: RecordMapper = mapper_type()
    sink = _TimedSink(
        bootstrap=settings.kafka.bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        client=client,
        mappers={names(contract_topic): mapper},
        config=SinkConfig(flush_rows=batch, max_buffer_rows=4 * batch),
    )
    started = time.perf_counter()
    asyncio.run(sink.run(asyncio.Event(), drain=True))
    wall = time.perf_counter() - started
    assert sink.stats.rows_written == rows, sink.stats
    steady = sink.last_commit_at - (sink.first_record_at or started)
    cpu = sink.last_commit_cpu - sink.first_record_cpu
    print(
        f"{topic} sink:  {rows:,} rows  {rows / steady:,.0f} rows/s (first record → last commit, "
        f"{steady:.2f} s); {rows / wall:,.0f} rows/s wall incl. group join ({wall:.2f} s); "
        f"{sink.stats.batches} batches; {cpu / rows * 1e6:.1f} µs CPU/row; {_load()}"
    )
    return rows / steady


def bench_bare(client: SerializedClient, topic: str, rows: int, batch: int) -> float:
    _contract_topic, mapper_type, values, key = BENCHES[topic]
    mapper: RecordMapper = mapper_type()
    table = mapper.tables[0]
    mapped: list[Row] = []
    for i, value in enumerate(values(rows)):
        rec: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            topic, 0, i, 0, 0, key(i), value, None, 0, len(value), ()
        )
        mapped.extend(mapper.rows(rec)[table.name])
    client.command(f"CREATE TABLE {table.name}_bare AS {table.name}")
    columns = list(table.columns)
    started, started_cpu = time.perf_counter(), time.process_time()
    for start in range(0, rows, batch):
        client.insert(f"{table.name}_bare", mapped[start : start + batch], column_names=columns)
    took = time.perf_counter() - started
    cpu = time.process_time() - started_cpu
    print(
        f"{topic} bare:  {rows:,} rows  {rows / took:,.0f} rows/s (clickhouse-connect insert of "
        f"the same rows, already mapped, {batch:,} per insert, {took:.2f} s); "
        f"{cpu / rows * 1e6:.1f} µs CPU/row; {_load()}"
    )
    return rows / took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--topics", default="scans,alerts", help="of: " + ", ".join(BENCHES))
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            kafka={
                "topic_prefix": f"bench{uuid.uuid4().hex[:6]}.",
                "partitions": 4,
                **(
                    {"bootstrap_servers": os.environ["CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS"]}
                    if "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS" in os.environ
                    else {}
                ),
            },
        )
        ensure_topics(
            settings.kafka.bootstrap,
            TopicNames(settings.kafka.topic_prefix),
            (SCANS, ALERTS, *NOTIFY_TOPICS),
            request_timeout_s=settings.kafka.request_timeout_s,
            partitions=4,
        )
        client = SerializedClient(open_client(settings))
        try:
            migrate(client, settings)
            for topic in args.topics.split(","):
                sink_rate = bench_sink(settings, client, topic, args.rows, args.batch)
                bare_rate = bench_bare(client, topic, args.rows, args.batch)
                met = sink_rate >= TARGET_ROWS_S and sink_rate >= TARGET_RATIO * bare_rate
                print(
                    f"{topic} ratio: sink / bare = {sink_rate / bare_rate:.0%} (target: "
                    f">= {TARGET_ROWS_S:,} rows/s and >= {TARGET_RATIO:.0%}: "
                    f"{'met' if met else 'NOT met'})"
                )
        finally:
            with contextlib.suppress(Exception):
                client.close()


if __name__ == "__main__":
    main()
