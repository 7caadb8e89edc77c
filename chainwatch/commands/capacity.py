"""`chainwatch plan-capacity`: size a deployment from the stored bench figures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from chainwatch.cli_context import float_option, settings
from sinks.clickhouse.settings import MAX_TTL_DAYS
from streams.settings import KAFKA_INT16_MAX

# A bound on every number the plan multiplies: without one `--orders-in-flight 1e29`
# printed disk sizes in float noise (`1,119,999,552,000,181.0 TB`) and exit 0. No
# deployment holds a trillion open orders; the others are their settings' own bounds.
MAX_ORDERS_IN_FLIGHT = 10**12


def register(app: typer.Typer) -> None:
    @app.command("plan-capacity")
    def plan_capacity_command(
        rate: Annotated[
            float,
            float_option(
                "--rate", min=0.001, max=1e9, help="Input records/s, all topics together."
            ),
        ],
        orders_in_flight: Annotated[
            int,
            typer.Option(
                "--orders-in-flight", help="Orders open at once.", min=0, max=MAX_ORDERS_IN_FLIGHT
            ),
        ] = 10_000,
        history_days: Annotated[
            int | None,
            typer.Option(
                "--history-days",
                help="Days of raw history ClickHouse keeps; "
                "default CHAINWATCH_CLICKHOUSE__TTL_DAYS.",
                min=1,
                max=MAX_TTL_DAYS,
            ),
        ] = None,
        replication_factor: Annotated[
            int,
            typer.Option(
                "--replication-factor",
                help="Kafka replication of the topics.",
                min=1,
                max=KAFKA_INT16_MAX,
            ),
        ] = 3,
        figures_file: Annotated[
            Path | None,
            typer.Option(
                "--figures", help="Bench figures YAML; default chainwatch/capacity_figures.yaml."
            ),
        ] = None,
    ) -> None:
        """Partitions, workers, sinks, RocksDB disk and ClickHouse rows for a target load."""
        from chainwatch.capacity import (
            FIGURES_FILE,
            Load,
            human_bytes,
            load_figures,
            plan_capacity,
        )

        cfg = settings()
        figures = load_figures(figures_file or FIGURES_FILE)
        days = history_days or cfg.clickhouse.ttl_days
        plan = plan_capacity(
            Load(
                rate=rate,
                orders_in_flight=orders_in_flight,
                history_days=days,
                standby_replicas=cfg.engine.standby_replicas,
                closed_order_retention_days=cfg.engine.closed_order_retention_days,
                replication_factor=replication_factor,
            ),
            figures,
        )
        rows = [
            ("partitions per topic", f"{plan.partitions}"),
            ("workers", f"{plan.workers}"),
            ("sink processes", f"{plan.sinks}"),
            ("orders in engine state", f"{plan.orders_in_state:,}"),
            ("RocksDB disk, all workers", human_bytes(plan.rocksdb_bytes_total)),
            ("RocksDB disk per worker", human_bytes(plan.rocksdb_bytes_per_worker)),
            ("changelog topics on Kafka", human_bytes(plan.changelog_bytes)),
            ("memory per worker (memory store)", human_bytes(plan.memory_bytes_per_worker)),
            ("ClickHouse rows/day", f"{plan.clickhouse_rows_per_day:,}"),
            ("ClickHouse rows kept", f"{plan.clickhouse_rows_kept:,}"),
        ]
        width = max(len(label) for label, _ in rows)
        lines = [
            f"target: {rate:,.0f} records/s, {orders_in_flight:,} orders in flight, "
            f"{days} days of history",
            *(f"{label:<{width}} {value}" for label, value in rows),
            "assumptions:",
            *(f"  - {a}" for a in plan.assumptions),
        ]
        sys.stdout.write("\n".join(lines) + "\n")
