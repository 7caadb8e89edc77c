"""Builds the faust application from the settings.

No module-level app: every process (worker, replay, tests) builds its own from
the settings object, so two apps with different ids and topic prefixes can
live in one test session and nothing leaks between them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.kafka_security import Kafka, endpoint
from streams.kafka_transport import ChainwatchApp
from streams.partitioning import CachedPartitioner
from streams.table_manager import PromptTableManager

_THROUGHPUT: dict[str, Any] = {
    # Outputs (alerts, snapshots, changelogs, internal messages) are queued one
    # by one; without a linger every one became its own produce request and the
    # socket writes took a third of the worker's CPU (bench/engine.py). 5 ms is
    # invisible next to the 1 s deadline-latency goal.
    "producer_linger": 0.005,
    "producer_max_batch_size": 512 * 1024,
    "broker_max_poll_records": 2000,
    "stream_buffer_maxsize": 8192,
}
"""faust settings that let a worker batch its I/O (docs/performance-engine.md)."""


def create_app(
    app_id: str,
    *,
    bootstrap: Kafka,
    partitions: int,
    replication_factor: int = 1,
    data_dir: Path,
    store: str = "memory",
    **extra: Any,
) -> ChainwatchApp:
    """A faust app with at-least-once processing and tables recovered from changelogs.

    exactly_once is deliberately not used (faust #323, #517): effects are made
    idempotent instead (alerts are re-published by id, sinks de-duplicate).
    """
    kafka = endpoint(bootstrap)
    store_url = "rocksdb://" if store == "rocksdb" else "memory://"
    data_dir.mkdir(parents=True, exist_ok=True)
    return ChainwatchApp(
        app_id,
        broker=f"kafka://{kafka.bootstrap}",
        # SASL/TLS of every consumer and producer faust makes (kafka_transport's too)
        broker_credentials=kafka.security.faust_credentials(),
        store=store_url,
        topic_partitions=partitions,
        topic_replication_factor=replication_factor,
        datadir=str(data_dir / app_id),
        web_enabled=False,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Kafka's default partitioner, its murmur2 memoised (streams.partitioning)
        producer_partitioner=CachedPartitioner(),
        # every table exists before the worker starts: no pause before recovery
        TableManager=PromptTableManager,
        **{**_THROUGHPUT, **extra},
    )
