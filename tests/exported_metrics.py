"""The series each process exports, read from the registries the processes build
(tests/dashboards/test_prometheus_dashboard.py, tests/docs/test_doc_facts.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry

from schemas.plan import load_plan
from streams.app import create_app
from streams.engine.agents import Engine, EngineConfig
from streams.ingest.metrics import GatewayMetrics
from streams.topics import TopicNames

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ()}


def exported(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exposes (a labelled family without children included)."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def exported_by_process(data_dir: Path) -> dict[str, set[str]]:
    """Series names per process (`chainwatch_<process>_...`): a worker's engine with its
    gauges computed once, the gateway's registry, and the sink's and the notifier's
    module-level series in the default registry."""
    import sinks.clickhouse.metrics
    import sinks.webhooks.metrics

    del sinks  # imported for their module-level series in the default registry
    app = create_app("exported-metrics", bootstrap="localhost:1", partitions=1, data_dir=data_dir)
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None)))
    asyncio.run(engine.observer.refresh())  # the gauges computed on the worker's loop
    return {
        "worker": exported(engine.runtime.metrics.registry),
        "gateway": exported(GatewayMetrics(max_group_records=1).registry),  # names only
        "sink": exported(REGISTRY),
        "webhook": exported(REGISTRY),
    }
