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


def registries_by_process(data_dir: Path) -> dict[str, CollectorRegistry]:
    """The registry each process (`chainwatch_<process>_...`) exports: a worker's engine
    with its gauges computed once, the gateway's registry, and the sink's and the
    notifier's module-level series in the default registry."""
    import sinks.clickhouse.metrics
    import sinks.webhooks.metrics

    del sinks  # imported for their module-level series in the default registry
    app = create_app("exported-metrics", bootstrap="localhost:1", partitions=1, data_dir=data_dir)
    engine = Engine(app, EngineConfig(names=TopicNames("t."), plan=load_plan(None)))
    asyncio.run(engine.observer.refresh())  # the gauges computed on the worker's loop
    return {
        "worker": engine.runtime.metrics.registry,
        "gateway": GatewayMetrics(max_group_records=1).registry,  # names only
        "sink": REGISTRY,
        "webhook": REGISTRY,
    }


def exported_by_process(data_dir: Path) -> dict[str, set[str]]:
    """Series names per process (`registries_by_process`)."""
    return {process: exported(r) for process, r in registries_by_process(data_dir).items()}


def label_names(registry: CollectorRegistry) -> dict[str, frozenset[str]]:
    """The label names of every series a registry exposes (a histogram's `_bucket` with
    `le`), children or none. prometheus_client keeps them only on the metric objects and
    the families a custom collector builds (`_labelnames`): a family without children
    has no sample to show them."""
    names: dict[str, frozenset[str]] = {}
    for collector in list(registry._collector_to_names):
        own = getattr(collector, "_labelnames", None)
        for family in collector.collect():
            labels = frozenset(own if own is not None else getattr(family, "_labelnames", ()))
            for sample in family.samples:
                labels |= set(sample.labels) - {"le", "quantile"}
            names[family.name] = labels
            for suffix in SUFFIXES.get(family.type, ()):
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names
