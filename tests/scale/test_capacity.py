"""`chainwatch plan-capacity`: the arithmetic, the figures file, the command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chainwatch.capacity import (
    FIGURES_FILE,
    Figure,
    Figures,
    Load,
    human_bytes,
    load_figures,
    plan_capacity,
)
from chainwatch.errors import UserError


def _figures(**overrides: float) -> Figures:
    values = {
        "events_per_s_per_worker": 100.0,
        "rss_bytes_per_open_order": 10_000.0,
        "state_bytes_per_order": 1_000.0,
        "rows_per_s_per_sink": 10_000.0,
        "records_per_order": 10.0,
        "clickhouse_rows_per_record": 5.0,
    }
    values.update(overrides)
    return Figures(machine="test box", **{k: Figure(v, True, "test") for k, v in values.items()})


def test_workers_cover_the_rate_at_the_planned_utilization() -> None:
    # 100 records/s per worker at 70 % = 70/s: 700/s needs exactly 10, 701/s needs 11.
    assert (
        plan_capacity(Load(rate=700, orders_in_flight=0, history_days=1), _figures()).workers == 10
    )
    assert (
        plan_capacity(Load(rate=701, orders_in_flight=0, history_days=1), _figures()).workers == 11
    )


def test_partitions_leave_room_to_double_the_fleet_as_a_power_of_two() -> None:
    plan = plan_capacity(Load(rate=701, orders_in_flight=0, history_days=1), _figures())
    assert plan.partitions == 32  # 11 workers -> 22 -> next power of two
    small = plan_capacity(Load(rate=1, orders_in_flight=0, history_days=1), _figures())
    assert (small.workers, small.partitions) == (1, 4)


def test_state_counts_orders_in_flight_and_closed_orders_still_retained() -> None:
    # 10 records/s / 10 records per order = 1 order closed per second = 86,400 a day,
    # kept 2 days after closing; plus 1,000 in flight.
    load = Load(
        rate=10,
        orders_in_flight=1_000,
        history_days=1,
        standby_replicas=1,
        closed_order_retention_days=2,
        replication_factor=3,
        rocksdb_overhead=2.0,
    )
    plan = plan_capacity(load, _figures())
    assert plan.orders_in_state == 1_000 + 2 * 86_400
    state = plan.orders_in_state * 1_000
    assert plan.rocksdb_bytes_total == state * 2 * 2  # active + 1 standby, x2 overhead
    assert plan.rocksdb_bytes_per_worker == plan.rocksdb_bytes_total // plan.workers
    assert plan.changelog_bytes == state * 3
    # the memory store holds every order in state, closed ones still retained included:
    # counting only the 1,000 in flight made it 170 times too small here
    assert plan.memory_bytes_per_worker == plan.orders_in_state * 10_000 // plan.workers


def test_clickhouse_rows_and_sinks_follow_the_rows_per_record() -> None:
    plan = plan_capacity(Load(rate=2_000, orders_in_flight=0, history_days=30), _figures())
    assert plan.clickhouse_rows_per_day == 2_000 * 5 * 86_400
    assert plan.clickhouse_rows_kept == plan.clickhouse_rows_per_day * 30
    assert plan.sinks == 2  # 10,000 rows/s against 7,000 per sink


def test_the_plan_names_every_figure_it_used_and_the_machine() -> None:
    plan = plan_capacity(Load(rate=100, orders_in_flight=5, history_days=7), _figures())
    text = "\n".join(plan.assumptions)
    assert "test box" in text
    assert "100 records/s per worker" in text
    assert "70%" in text


def test_the_stored_figures_file_loads_and_names_its_machine() -> None:
    figures = load_figures(FIGURES_FILE)
    assert "2-core" in figures.machine
    assert figures.events_per_s_per_worker.measured


def test_the_figures_ship_in_a_package_the_wheel_installs() -> None:
    """They lived in bench/, which neither the wheel nor the image carries: from
    either, `plan-capacity` could only say that it could not read them."""
    import tomllib

    import chainwatch

    root = Path(chainwatch.__file__).resolve().parents[1]
    wheel = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    packages = wheel["targets"]["wheel"]["packages"]
    assert FIGURES_FILE.relative_to(root).parts[0] in packages
    assert load_figures().machine


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("machine: x\n", "engine.events_per_s_per_worker is missing"),
        ("- a\n", "`machine`"),
        (
            re.sub(
                r"(events_per_s_per_worker:\n\s+value:) \S+", r"\1 -1", FIGURES_FILE.read_text()
            ),
            "events_per_s_per_worker.value must be a positive number",
        ),
    ],
)
def test_a_broken_figures_file_is_a_user_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "figures.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_figures(path)


def test_plan_capacity_command_prints_the_plan_and_its_assumptions() -> None:
    from typer.testing import CliRunner

    from chainwatch.cli import app
    from chainwatch.cli_context import state

    state.pop("settings", None)
    result = CliRunner().invoke(
        app,
        ["plan-capacity", "--rate", "2000", "--orders-in-flight", "50000", "--history-days", "90"],
        env={"CHAINWATCH_ENGINE__STANDBY_REPLICAS": "1"},
    )
    state.pop("settings", None)
    assert result.exit_code == 0, result.output
    figures = load_figures()
    expected = plan_capacity(Load(rate=2000, orders_in_flight=50_000, history_days=90), figures)
    rows = dict(re.findall(r"^(\S.*?) {1,}(\S+(?: [KMGT]?B)?)$", result.output, re.M))
    assert rows["workers"] == f"{expected.workers}"
    assert rows["partitions per topic"] == f"{expected.partitions}"
    assert rows["ClickHouse rows/day"] == f"{expected.clickhouse_rows_per_day:,}"
    # labelled by the store it holds for: with RocksDB the state is on disk
    assert rows["memory per worker (memory store)"] == human_bytes(expected.memory_bytes_per_worker)
    assert "assumptions:" in result.output
    assert figures.machine in result.output
