"""Prometheus metrics, liveness and readiness of one engine (one faust app).

Every engine has its own `CollectorRegistry` (no module-level metric), so two
apps in one process (tests, benches) never share or clash on a series; the
worker serves that registry (`chainwatch.ops_server`).

Two kinds of series, kept cheap on the hot path:
- counters and the processing-time histogram are updated per record through
  label children resolved once (about a microsecond per record);
- gauges (lag, deadline index, table sizes, readiness) are computed every
  `REFRESH_S` by a faust timer on the app's own event loop, where reading the
  tables and the consumer is safe, and published as one immutable snapshot
  that the HTTP thread only reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.alerts import AlertStatus, AlertType
from schemas.dead_letter import ReasonCode

if TYPE_CHECKING:
    from streams.engine.runtime import EngineRuntime

log = structlog.stdlib.get_logger(__name__)

REFRESH_S = 2.0
"""How often the gauges are recomputed (and the event loop proves it runs)."""
STALL_S = 60.0
"""A loop that has not refreshed for this long is stalled: `/healthz` answers 503."""
COMMIT_STUCK_S = 30.0
"""An offset commit unanswered for this long makes `/readyz` 503 (logged once): faust's
commit waits for the group coordinator with no deadline, and a coordinator on a broker
other than the one the Kafka probe asks was gone unnoticed while nothing was committed."""

PROCESSING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
FETCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000)
OUTCOMES = ("ok", "dead_lettered", "processing_error", "forwarded")


@dataclass(frozen=True, slots=True)
class TopicMeters:
    """The per-record series of one input, resolved once per agent."""

    ok: Any
    dead_lettered: Any
    processing_error: Any
    forwarded: Any
    seconds: Any


def ready_family(ready: bool) -> GaugeMetricFamily:
    """`chainwatch_worker_ready`: from the snapshot, or 0 once its loop stalled."""
    return GaugeMetricFamily(
        "chainwatch_worker_ready", "1 when the worker answers /readyz with 200.", value=int(ready)
    )


class _Snapshot(Collector):
    """Gauges computed on the event loop, swapped in whole (the HTTP thread only reads)."""

    def __init__(self) -> None:
        self.families: tuple[Metric, ...] = ()
        self.stalled: Callable[[], bool] | None = None
        """Whether the loop that computes them stopped turning (read at each scrape)."""

    def collect(self) -> Iterable[Metric]:
        if self.stalled is None or not self.stalled():
            return self.families
        # the snapshot stopped at the stall: its `ready` said 1 while /readyz answered 503
        not_ready = ready_family(False)
        return tuple(not_ready if f.name == not_ready.name else f for f in self.families)

    def describe(self) -> Iterable[Metric]:
        return ()  # computed: not checked for duplicates at registration


class EngineMetrics:
    """The registry of one engine and its counters (names as in docs/observability.md)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.records = Counter(
            "chainwatch_worker_records",
            "Records handled by the engine's agents, by logical topic and outcome (ok, "
            "dead_lettered: a dead letter was published while handling it, processing_error, "
            "forwarded: read from another partition than its id's, a copy sent there).",
            ["topic", "outcome"],
            registry=registry,
        )
        self.processing_seconds = Histogram(
            "chainwatch_worker_processing_seconds",
            "Time to handle one record (its turn, not the wait for it), by logical topic.",
            ["topic"],
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self.fetch_records = Histogram(
            "chainwatch_worker_fetch_records",
            "Records per non-empty fetch from Kafka (the batches the worker's consumer gets: "
            "inputs, internal topics, and changelogs while recovering).",
            buckets=FETCH_BUCKETS,
            registry=registry,
        )
        self.alerts = Counter(
            "chainwatch_worker_alerts_published",
            "Alert records published by type and status (re-announcements after a recovery "
            "are counted in chainwatch_worker_alerts_reannounced instead).",
            ["type", "status"],
            registry=registry,
        )
        self.reannounced = Counter(
            "chainwatch_worker_alerts_reannounced",
            "Alert records published again after a table recovery (consumers keep the latest).",
            registry=registry,
        )
        self.dead_letters = Counter(
            "chainwatch_worker_dead_letters",
            "Dead letters published by reason code.",
            ["reason"],
            registry=registry,
        )
        self._alert_children = {
            (t.value, s.value): self.alerts.labels(t.value, s.value)
            for t in AlertType
            for s in AlertStatus
        }
        self._dead_letter_children = {
            r.value: self.dead_letters.labels(r.value) for r in ReasonCode
        }
        self.snapshot = _Snapshot()
        registry.register(self.snapshot)

    def for_topic(self, topic: str) -> TopicMeters:
        ok, dead_lettered, processing_error, forwarded = (
            self.records.labels(topic, o) for o in OUTCOMES
        )
        return TopicMeters(
            ok, dead_lettered, processing_error, forwarded, self.processing_seconds.labels(topic)
        )

    def alert(self, alert: Mapping[str, Any]) -> None:
        key = (str(alert.get("type")), str(alert.get("status")))
        child = self._alert_children.get(key)
        (child if child is not None else self.alerts.labels(*key)).inc()

    def dead_letter(self, reason: str) -> None:
        child = self._dead_letter_children.get(reason)
        (child if child is not None else self.dead_letters.labels(reason)).inc()


class EngineObserver:
    """Computes the gauges, and answers `/healthz` and `/readyz`, for one engine."""

    def __init__(self, rt: EngineRuntime, inputs: Mapping[str, Any]) -> None:
        """`inputs`: logical topic name -> the faust topic its agent reads."""
        self.rt = rt
        self.inputs = dict(inputs)
        rt.metrics.snapshot.stalled = lambda: self.loop_stalled_s() is not None
        self.refreshed_at: float | None = None
        """monotonic() of the last refresh; None until the app has fully started."""
        self.kafka_problem: Callable[[], str | None] | None = None
        """Why Kafka makes the worker not ready, if it does (chainwatch.kafka_watch)."""
        self._commit: Any = None
        """The commit under way at the last refresh (faust's future for it), if any."""
        self.commit_since: float | None = None
        """monotonic() of the refresh that first saw `_commit` under way."""
        self._commit_logged = False

    # --- on the event loop (a faust timer) -------------------------------------------

    async def refresh(self) -> None:
        self._watch_commit()
        self.rt.metrics.snapshot.families = tuple(self.families())
        self.refreshed_at = time.monotonic()

    def _watch_commit(self) -> None:
        """Note how long faust's offset commit under way has waited (to a refresh's
        precision), and log once when it passes `COMMIT_STUCK_S` and when it ends."""
        consumer = getattr(self.rt.app, "_consumer", None)  # never build one (see below)
        under_way = getattr(consumer, "_commit_fut", None)  # set by faust for each commit
        waited = self.commit_pending_s()
        if under_way is not None and under_way is self._commit:
            if waited >= COMMIT_STUCK_S and not self._commit_logged:
                self._commit_logged = True
                log.warning(
                    "worker_commit_stuck",
                    waited_s=round(waited, 1),
                    hint="the consumer group's coordinator does not answer; check the Kafka "
                    "broker that hosts it (kafka-consumer-groups.sh --describe --state)",
                )
            return
        if self._commit_logged:
            log.info("worker_commit_answered", waited_s=round(waited, 1))
        self._commit, self._commit_logged = under_way, False
        self.commit_since = None if under_way is None else time.monotonic()

    def commit_pending_s(self) -> float:
        since = self.commit_since
        return 0.0 if since is None else time.monotonic() - since

    def families(self) -> Iterator[Metric]:
        rt, app = self.rt, self.rt.app
        yield from self._consumer_families(app)
        entries = GaugeMetricFamily(
            "chainwatch_worker_deadline_index_entries",
            "Entries of the deadline index (one per scheduled order deadline; stale entries "
            "are dropped when they fall due), by partition.",
            labels=["partition"],
        )
        overdue = GaugeMetricFamily(
            "chainwatch_worker_deadline_overdue_seconds",
            "How long the oldest deadline that fell due has waited to be fired (engine clock; "
            "0 when none is due), by partition. Live mode: should stay below a second.",
            labels=["partition"],
        )
        for partition in rt.deadlines.partitions():
            label = [str(partition)]
            entries.add_metric(label, rt.deadlines.size(partition))
            due = rt.deadlines.next_due(partition)
            now = rt.clock.target(partition)  # a held clock (catching up) waits too
            overdue.add_metric(label, max(0, now - due) / 1000 if due is not None else 0)
        yield entries
        yield overdue
        held = GaugeMetricFamily(
            "chainwatch_worker_clock_held_seconds",
            "Live mode: how long the clock of a partition new to this worker has been held "
            "while it reads what waited in Kafka (deadlines wait meanwhile; at most 600 s), "
            "by partition; 0 once released.",
            labels=["partition"],
        )
        for partition in sorted({*rt.deadlines.partitions(), *rt.clock.held()}):
            held.add_metric([str(partition)], rt.clock.held_s(partition))
        yield held
        keys = GaugeMetricFamily(
            "chainwatch_worker_table_keys",
            "Keys held in each engine table by this worker (active and standby partitions; "
            "an estimate with the rocksdb store).",
            labels=["table"],
        )
        for table in app.tables.values():
            size = table_keys(table)
            if size is not None:
                keys.add_metric([str(table.name)], size)
        yield keys
        yield GaugeMetricFamily(
            "chainwatch_worker_commit_pending_seconds",
            "How long the offset commit under way has waited for the consumer group's "
            f"coordinator (0: none under way; a commit takes milliseconds; /readyz answers 503 "
            f"past {COMMIT_STUCK_S:.0f} s).",
            value=self.commit_pending_s(),
        )
        ready, _ = self.ready(started=True)
        yield ready_family(ready)

    def _consumer_families(self, app: Any) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "chainwatch_worker_consumer_lag_records",
            "Records of an assigned input partition not yet committed by this worker "
            "(high watermark - committed offset; from offset 0 before the first commit), by "
            "logical topic and partition.",
            labels=["topic", "partition"],
        )
        assigned = GaugeMetricFamily(
            "chainwatch_worker_assigned_partitions",
            "Input partitions this worker owns (active), by logical topic.",
            labels=["topic"],
        )
        names = {topic.get_topic_name(): logical for logical, topic in self.inputs.items()}
        counts = dict.fromkeys(self.inputs, 0)
        try:
            actives = app.assignor.assigned_actives()
        except Exception:  # not started yet: no assignment
            actives = set()
        # faust's `app.consumer` property creates the consumer (and its thread's event loop)
        # when none exists: a scrape before the start must read, never build one
        consumer = getattr(app, "_consumer", None)
        committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
        read: Mapping[Any, int | None] = getattr(consumer, "_read_offset", {})
        for tp in sorted(actives):
            logical = names.get(tp.topic)
            if logical is None:
                continue  # a changelog or another app's topic
            counts[logical] += 1
            position = committed.get(tp)
            if position is None:  # nothing committed yet: what was read, else the start
                last = read.get(tp)
                position = 0 if last is None else int(last) + 1
            try:
                high = consumer.highwater(tp) if consumer is not None else None
            except Exception:  # no fetch for this partition yet
                high = None
            if high is not None:
                lag.add_metric([logical, str(tp.partition)], max(0, int(high) - int(position)))
        for logical, count in counts.items():
            assigned.add_metric([logical], count)
        yield lag
        yield assigned

    # --- from any thread (the probes read flags only) -----------------------------

    def loop_stalled_s(self) -> float | None:
        at = self.refreshed_at
        if at is None:
            return None
        age = time.monotonic() - at
        return age if age > STALL_S else None

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive unless the event loop stopped turning (no refresh for `STALL_S`)."""
        stalled = self.loop_stalled_s()
        if stalled is not None:
            return False, {"reasons": [f"event loop stalled for {stalled:.0f} s"]}
        return True, {"started": self.refreshed_at is not None}

    def ready(self, *, started: bool = False) -> tuple[bool, dict[str, Any]]:
        """Ready: the app has started (first recovery done), owns partitions, is neither
        rebalancing nor recovering tables, and its event loop turns."""
        app = self.rt.app
        reasons = []
        if not started and self.refreshed_at is None:
            reasons.append("starting: table recovery not finished")
        if getattr(app, "rebalancing", False):
            reasons.append("rebalancing")
        if getattr(app, "in_recovery", False):
            reasons.append("recovering tables")
        if getattr(app, "unassigned", False):
            reasons.append("no partitions assigned")
        stalled = self.loop_stalled_s()
        if stalled is not None:
            reasons.append(f"event loop stalled for {stalled:.0f} s")
        pending = self.commit_pending_s()
        if pending >= COMMIT_STUCK_S:
            reasons.append(f"offset commit unanswered for {pending:.0f} s")
        kafka = self.kafka_problem() if self.kafka_problem is not None else None
        if kafka is not None:
            reasons.append(kafka)
        return not reasons, {"reasons": reasons}


def table_keys(table: Any) -> int | None:
    """Keys of a faust table's store: exact in memory, RocksDB's estimate, else None."""
    store = table.data
    data = getattr(store, "data", None)
    if isinstance(data, dict):  # faust.stores.memory.Store
        return len(data)
    total = 0
    for db in getattr(store, "_dbs", {}).values():  # faust.stores.rocksdb.Store
        try:
            if hasattr(db, "property_int_value"):  # rocksdict
                total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
            else:  # python-rocksdb
                total += int(db.get_property(b"rocksdb.estimate-num-keys") or 0)
        except Exception:  # an unknown binding: no figure rather than a full scan
            return None
    return total if hasattr(store, "_dbs") else None
