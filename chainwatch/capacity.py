"""`chainwatch plan-capacity`: partitions, workers, disk and rows for a target load.

Pure arithmetic over the per-process figures in `chainwatch/capacity_figures.yaml`
(measured by `bench/engine.py` and `bench/sink.py`, stored with their machine; kept
in the package, not in bench/, so that an installed wheel or the image can size
too). Every figure and assumption used is returned with the plan, so the command
prints what its answer rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chainwatch.errors import UserError
from schemas.files import load_config_yaml, read_config_text

FIGURES_FILE = Path(__file__).resolve().parent / "capacity_figures.yaml"

DAY_S = 86_400


@dataclass(frozen=True)
class Figure:
    value: float
    measured: bool
    source: str


@dataclass(frozen=True)
class Figures:
    machine: str
    events_per_s_per_worker: Figure
    rss_bytes_per_open_order: Figure
    state_bytes_per_order: Figure
    rows_per_s_per_sink: Figure
    records_per_order: Figure
    clickhouse_rows_per_record: Figure


_SECTIONS = {
    "events_per_s_per_worker": "engine",
    "rss_bytes_per_open_order": "engine",
    "state_bytes_per_order": "engine",
    "rows_per_s_per_sink": "sink",
    "records_per_order": "workload",
    "clickhouse_rows_per_record": "workload",
}


def load_figures(path: Path = FIGURES_FILE) -> Figures:
    """The figures file, checked: every figure present, positive, with its source."""
    try:
        data = load_config_yaml(read_config_text(path))
    except OSError as exc:
        raise UserError(f"cannot read the bench figures {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("machine"), str):
        raise UserError(f"{path}: a mapping with `machine` (the bench machine) is expected")
    values: dict[str, Figure] = {}
    for name, section in _SECTIONS.items():
        entry: Any = (data.get(section) or {}).get(name)
        if not isinstance(entry, dict):
            raise UserError(f"{path}: {section}.{name} is missing")
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise UserError(f"{path}: {section}.{name}.value must be a positive number")
        values[name] = Figure(
            float(value), bool(entry.get("measured", False)), str(entry.get("source", "?"))
        )
    return Figures(machine=data["machine"], **values)


@dataclass(frozen=True)
class Load:
    rate: float  # input records/s, all topics together
    orders_in_flight: int
    history_days: int
    standby_replicas: int = 1
    closed_order_retention_days: float = 30
    replication_factor: int = 3
    utilization: float = 0.7  # share of a process's measured rate it is planned to run at
    rocksdb_overhead: float = 2.0  # space amplification + compaction headroom


@dataclass(frozen=True)
class Plan:
    workers: int
    partitions: int
    sinks: int
    orders_in_state: int
    rocksdb_bytes_total: int
    rocksdb_bytes_per_worker: int
    changelog_bytes: int
    memory_bytes_per_worker: int
    clickhouse_rows_per_day: int
    clickhouse_rows_kept: int
    assumptions: list[str]


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))


def plan_capacity(load: Load, figures: Figures) -> Plan:
    if load.rate <= 0:
        raise ValueError("rate must be positive")
    per_worker = figures.events_per_s_per_worker.value * load.utilization
    workers = max(1, math.ceil(load.rate / per_worker))
    # A topic's partition count bounds the workers that share it, and an existing
    # keyed topic cannot gain partitions without moving keys (and their state):
    # room to double the fleet, a power of two, at least the default 4.
    partitions = max(4, _next_power_of_two(2 * workers))
    rows_per_s = load.rate * figures.clickhouse_rows_per_record.value
    sinks = max(1, math.ceil(rows_per_s / (figures.rows_per_s_per_sink.value * load.utilization)))
    orders_closed_per_day = load.rate * DAY_S / figures.records_per_order.value
    orders_in_state = load.orders_in_flight + math.ceil(
        orders_closed_per_day * load.closed_order_retention_days
    )
    state_bytes = orders_in_state * figures.state_bytes_per_order.value
    rocksdb_total = state_bytes * (1 + load.standby_replicas) * load.rocksdb_overhead
    rows_per_day = rows_per_s * DAY_S
    assumptions = [
        f"figures measured on: {figures.machine}",
        f"engine: {figures.events_per_s_per_worker.value:,.0f} records/s per worker "
        f"({figures.events_per_s_per_worker.source})",
        f"sink: {figures.rows_per_s_per_sink.value:,.0f} rows/s per sink process "
        f"({figures.rows_per_s_per_sink.source})",
        f"each process planned at {load.utilization:.0%} of its measured rate",
        f"an order's state: {figures.state_bytes_per_order.value:,.0f} bytes "
        f"({figures.state_bytes_per_order.source})",
        f"orders in state = {load.orders_in_flight:,} in flight + closed orders kept "
        f"{load.closed_order_retention_days:g} days (engine.closed_order_retention_days) at "
        f"{orders_closed_per_day:,.0f} closed/day = rate / "
        f"{figures.records_per_order.value:g} records per order "
        f"({'measured' if figures.records_per_order.measured else 'estimate'}: "
        f"{figures.records_per_order.source})",
        f"RocksDB: 1 active + {load.standby_replicas} standby copies, x{load.rocksdb_overhead:g} "
        "for space amplification and compaction headroom",
        "changelog topics: one compacted copy of the state x replication "
        f"{load.replication_factor}",
        f"memory per worker (memory store, engine.store's default): "
        f"{figures.rss_bytes_per_open_order.value:,.0f} bytes RSS per order in state, closed "
        "orders kept for the retention included (measured on open orders; a closed order "
        "keeps its slot until evicted), active copies only: each standby copy adds its "
        "share again; with engine.store=rocksdb the state is on disk, not in RAM",
        f"ClickHouse: {figures.clickhouse_rows_per_record.value:g} rows per input record "
        f"({'measured' if figures.clickhouse_rows_per_record.measured else 'estimate'}: "
        f"{figures.clickhouse_rows_per_record.source}); rows kept over {load.history_days} "
        "days, before replication",
    ]
    return Plan(
        workers=workers,
        partitions=partitions,
        sinks=sinks,
        orders_in_state=orders_in_state,
        rocksdb_bytes_total=math.ceil(rocksdb_total),
        rocksdb_bytes_per_worker=math.ceil(rocksdb_total / workers),
        changelog_bytes=math.ceil(state_bytes * load.replication_factor),
        # the memory store holds every order in state, not only those in flight: at
        # 500 records/s the closed ones kept 30 days are 86 million, 4,000 x the 20,000 open
        memory_bytes_per_worker=math.ceil(
            orders_in_state * figures.rss_bytes_per_open_order.value / workers
        ),
        clickhouse_rows_per_day=math.ceil(rows_per_day),
        clickhouse_rows_kept=math.ceil(rows_per_day * load.history_days),
        assumptions=assumptions,
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
