"""The stream worker process, and the topic set-up every process shares.

Each runner builds what it needs from the settings, runs until SIGINT/SIGTERM
(`chainwatch.process`), and releases everything it opened (the embedded store
lock above all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from chainwatch.kafka_admin import (
    contract_topic_configs,
    create_missing_topics,
    ensure_topics,
    retry_until_reachable,
)
from chainwatch.logs import get_logger
from chainwatch.ops_server import OpsServer, serve_ops
from chainwatch.process import Startup, process_lifetime, waiting_before_main
from chainwatch.settings import Settings
from streams.app import create_app
from streams.topics import INPUT_TOPICS, OUTPUT_TOPICS, TopicNames

log = get_logger(__name__)

WORKER_PORT_TRIES = 16
"""`engine.metrics_port` and the next 15: several workers on one host (docs/observability.md)."""


def topic_names(settings: Settings) -> TopicNames:
    return TopicNames(settings.kafka.topic_prefix)


def largest_batch(settings: Settings) -> int:
    """How large an agent's batches may grow: on the event clock (replays, backtests)
    up to `replay_batch_size`; a live worker's stay `batch_size`, since every hop's
    wait for a batch adds to the deadline latency (streams.engine.batching)."""
    engine = settings.engine
    return engine.replay_batch_size if engine.clock == "event" else engine.batch_size


def prepare_topics(settings: Settings, *, also: Iterable[str] = ()) -> None:
    """The contract's topics, and the logical topics in `also`, created in one request."""
    ensure_topics(
        settings.kafka.endpoint,
        topic_names(settings),
        (*INPUT_TOPICS, *OUTPUT_TOPICS, *also),
        request_timeout_s=settings.kafka.request_timeout_s,
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        topic_configs=settings.kafka.topic_configs(),
    )


def worker_topic_configs(
    app: Any, settings: Settings, internal_topics: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Every topic a worker reads or writes, full name -> configs, created before faust starts.

    faust declares its internal and changelog topics lazily: a consumer that
    subscribed before they existed never saw them, and with several workers one
    that read the metadata before another had created a changelog stopped with
    PartitionsMismatch ("... changelog topic has 0 partitions"; bench/fleet.py).
    """
    configs = contract_topic_configs(
        topic_names(settings), (*INPUT_TOPICS, *OUTPUT_TOPICS), settings.kafka.topic_configs()
    )
    for name in internal_topics:
        configs[f"{settings.engine.app_id}-{name}"] = settings.kafka.topic_configs()
    for config, names in changelog_topics(app, settings).items():
        configs.update({name: dict(config) for name in names})
    return configs


def leader_topic(app: Any) -> str:
    """faust's leader-election topic of `app` (one partition; its assignor subscribes to it).

    faust creates it as the worker starts, after the consumer read the cluster's
    metadata, so the consumer subscribed without it ("Ignoring missing topic") and
    found it at its next metadata refresh, five minutes later (Kafka's
    `metadata.max.age.ms`): the group rebalanced then and the worker recovered its
    tables again (a demo worker logged `generation id 2` at 5:00, then faust's
    "Stream has not started processing" for its inbox partitions).
    """
    return f"{app.conf.id}-__assignor-__leader"


def create_worker_topics(app: Any, settings: Settings, internal_topics: Iterable[str]) -> None:
    """Create every topic a worker subscribes to or writes that is missing, before faust
    starts (`worker_topic_configs`, and faust's leader topic with its one partition)."""
    topics = worker_topic_configs(app, settings, internal_topics)
    leader = leader_topic(app)
    topics[leader] = settings.kafka.topic_configs()
    create_missing_topics(
        settings.kafka.endpoint,
        topics,
        request_timeout_s=settings.kafka.request_timeout_s,
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        partitions_by_name={leader: 1},
    )


def prepare_worker_topics(app: Any, settings: Settings, internal_topics: Iterable[str]) -> None:
    """`PartitionsMismatch` if a topic the engine routes by id (its tables' changelogs
    included: a changelog record goes to its table's partition, and faust crashed on the
    first write to one with fewer) already exists with another count than
    `kafka.partitions` (a worker that would dead-letter most of its input does
    not start; chainwatch.topic_partitions), else `create_worker_topics`. Checked first, so
    a refused start creates nothing with the count it refused."""
    from chainwatch.topic_partitions import check_partitions, routed_topics

    changelogs = [name for names in changelog_topics(app, settings).values() for name in names]
    check_partitions(
        settings.kafka.endpoint,
        [*routed_topics(settings), *changelogs],
        settings.kafka.partitions,
        request_timeout_s=settings.kafka.request_timeout_s,
    )
    create_worker_topics(app, settings, internal_topics)


def changelog_topics(app: Any, settings: Settings) -> dict[tuple[tuple[str, str], ...], list[str]]:
    """The changelog topic of every table of `app`, grouped by the configuration faust
    gives them (compacted; `min.insync.replicas` from the settings). Tables with a
    retention (windowed) are left to faust."""
    grouped: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for table in app.tables.values():
        topic = table.changelog_topic
        if topic.retention is not None:
            continue
        flags = [
            flag for flag, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on
        ]
        config = {
            **settings.kafka.topic_configs(),
            **{k: str(v) for k, v in (topic.config or {}).items()},
        }
        if flags:
            config["cleanup.policy"] = ",".join(flags)
        grouped.setdefault(tuple(sorted(config.items())), []).extend(topic.topics)
    return grouped


def worker_app(settings: Settings) -> tuple[Any, Any]:
    """The faust app of one engine worker and its engine, as `settings` make them."""
    from schemas.plan import load_plan
    from streams.engine.agents import EngineConfig, register_engine

    plan = load_plan(settings.engine.plan)
    app = create_app(
        settings.engine.app_id,
        bootstrap=settings.kafka.endpoint,
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        data_dir=settings.data_path / "faust",
        store=settings.engine.store,
        table_standby_replicas=settings.engine.standby_replicas,
        broker_commit_interval=settings.engine.commit_interval_s,
        broker_session_timeout=settings.engine.session_timeout_s,
        broker_heartbeat_interval=settings.engine.heartbeat_interval_s,
        broker_commit_every=10_000,
    )
    engine = register_engine(
        app,
        EngineConfig(
            names=topic_names(settings),
            plan=plan,
            clock=settings.engine.clock,
            snapshots=settings.engine.snapshots,
            tick_interval_s=settings.engine.tick_interval_s,
            batch_size=settings.engine.batch_size,
            batch_most=largest_batch(settings),
            batch_within_s=settings.engine.batch_within_s,
            defer_derivations=settings.engine.clock == "event"
            and settings.engine.replay_defer_derivations,
            limits=settings.engine.limits(),
        ),
    )
    return app, engine


def run_worker(settings: Settings) -> None:
    """Run one monitoring-engine worker in this process until it is told to stop."""
    from chainwatch.collector import settle_collector
    from chainwatch.worker_stop import BoundedStopWorker
    from streams.engine.messages import INTERNAL_TOPICS

    app, engine = worker_app(settings)
    startup = Startup(f"Kafka at {settings.kafka.bootstrap}")
    ops = serve_worker_ops(settings, engine, startup)  # probes answer while it waits for Kafka
    with waiting_before_main("worker", ops) as waited:
        retry_until_reachable(
            lambda: prepare_worker_topics(app, settings, INTERNAL_TOPICS), process="worker"
        )
    if waited.stopped:
        return
    startup.waiting_for = None
    engine.observer.kafka_problem = startup.kafka_problem
    # faust's Worker owns its event loop and stops on SIGINT/SIGTERM itself; the start and
    # stop lines and the ops port's lifetime are every process's (chainwatch.process)
    settled = settle_collector(settings.engine.gc_young_threshold)
    log.info("collector_settled", frozen=settled.frozen, thresholds=list(settled.thresholds))
    with (
        startup.watching_kafka(settings.kafka, ops),
        process_lifetime("worker", ops, announced=True),
    ):
        # faust would install its own handlers; ours (chainwatch.logs) already render every
        # record in the configured format (CHAINWATCH_LOG_FORMAT=json: one JSON object a line).
        worker = BoundedStopWorker(
            app,
            loglevel=settings.log_level,
            quiet=True,
            override_logging=False,
            stop_timeout_s=settings.engine.stop_timeout_s,
        )
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            refused = app.delivery_refused
            if exc.code not in (None, 0) or refused is None:
                raise
            # a stop (a signal) after a delivery failed: a clean stop, yet not all it
            # sent was taken (nothing was committed past it); the supervisor should know
            log.error("worker_stopped_with_a_delivery_refused", reason=refused)
            raise SystemExit(1) from None
        finally:
            worker.cancel_stop_deadline()


def serve_worker_ops(
    settings: Settings, engine: Any, startup: Startup | None = None
) -> OpsServer | None:
    """`/metrics`, `/healthz`, `/readyz` of a worker on `metrics_host`:`engine.metrics_port`
    (0 = off). A port taken by another worker on this host: the next one up to +15, then
    any free port; the port bound is logged (`worker_ops_listening`). While `startup`
    waits (for Kafka), the probes say so and the worker is not ready."""
    if not settings.engine.metrics_port:
        return None
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = engine.runtime.metrics.registry
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)  # process_* (RSS, CPU), python_*: as the sink's
    observer = engine.observer
    server = serve_ops(
        settings.metrics_host,
        settings.engine.metrics_port,
        registry=registry,
        health=observer.health
        if startup is None
        else _waiting(startup, startup.health, observer.health),
        ready=observer.ready
        if startup is None
        else _waiting(startup, startup.ready, observer.ready),
        tries=WORKER_PORT_TRIES,
        any_port_last=True,
    )
    log.info(
        "worker_ops_listening",
        host=settings.metrics_host,
        port=server.port,
        url=f"http://{settings.metrics_host}:{server.port}/metrics",
    )
    return server


def _waiting(
    startup: Startup,
    while_waiting: Callable[[], tuple[bool, dict[str, Any]]],
    engine: Callable[[], tuple[bool, dict[str, Any]]],
) -> Callable[[], tuple[bool, dict[str, Any]]]:
    """A probe that answers `while_waiting` while the worker waits (for Kafka), then the
    engine's."""

    def probe() -> tuple[bool, dict[str, Any]]:
        return while_waiting() if startup.waiting_for is not None else engine()

    return probe
