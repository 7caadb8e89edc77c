"""The stream worker process, and the topic set-up every process shares.

Each runner builds what it needs from the settings, runs until SIGINT/SIGTERM,
and releases everything it opened (the embedded store lock above all).
"""

from __future__ import annotations

from chainwatch.kafka_admin import ensure_topics
from chainwatch.settings import Settings
from streams.app import create_app
from streams.stage_counts import register_stage_counts
from streams.topics import INPUT_TOPICS, OUTPUT_TOPICS, TopicNames


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
