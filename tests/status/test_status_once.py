"""`chainwatch status --once` prints the ops picture from a store the real pipeline filled."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from chainwatch.replay import ReplayRun, stop_workers
from chainwatch.settings import Settings
from chainwatch.simulator.config import AnomalyRates, SimConfig
from chainwatch.simulator.generator import generate
from chainwatch.simulator.scenario_file import write_scenario
from chainwatch.simulator.summary import Summary
from chainwatch.sink_runner import run_sink
from sinks.clickhouse.connection import open_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Orders over 12 days cut after 11: in-flight, at-risk and stalled (breached) orders.
SCENARIO = SimConfig(
    seed=1, days=12, orders_per_day=4, anomalies=AnomalyRates(unit_incident=0.3, stall=0.3)
)
CUT_AFTER = timedelta(hours=264)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("status")
    cutoff = SCENARIO.start + CUT_AFTER
    cut_ms = int(cutoff.timestamp() * 1000)
    scenario = root / "scenario.ndjson"
    with scenario.open("w", encoding="utf-8") as handle:
        write_scenario((r for r in generate(SCENARIO) if r.at_ms <= cut_ms), handle, Summary())
    settings = Settings(
        data_dir=root / "data",
        kafka={"bootstrap_servers": kafka_bootstrap, "partitions": 2},
        log_level="warning",
    )
    run = ReplayRun(settings, scenario, partitions=2, progress=lambda _msg: None)
    try:
        run.publish()
        run.start_workers(1)
        run.finish(cutoff, timeout_s=240)
        stop_workers(run.workers)
        run_sink(run.settings, drain=True)
    finally:
        run.close()
    return run.settings


def _status(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env(), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_status_once_prints_every_section_with_the_stores_facts(store: Settings) -> None:
    client = open_client(store)
    try:
        at_risk = [
            r[0]
            for r in client.query(
                "SELECT order_id FROM order_state_current WHERE status = 'at_risk'"
            ).result_rows
        ]
        breaches = client.query(
            "SELECT order_id FROM alerts_current WHERE status = 'open' AND type IN "
            "('start_overdue', 'stage_overdue', 'handoff_overdue', 'order_overdue')"
        ).result_rows
        wip = client.query(
            "SELECT count() FROM order_state_current "
            "WHERE status IN ('on_track', 'at_risk', 'breached')"
        ).result_rows[0][0]
        latest_scan = client.query(
            "SELECT order_id FROM scans ORDER BY event_time DESC LIMIT 1"
        ).result_rows[0][0]
    finally:
        client.close()  # the command opens the store itself
    assert at_risk
    assert breaches
    assert wip

    done = _status(store, "--once")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for title in (
        "Work in progress per stage",
        f"Open breaches ({len(breaches)})",
        f"At-risk orders ({len(at_risk)})",
        "Units down or degraded",
        "Latest events",
    ):
        assert title in text, text
    for order_id in at_risk[:15]:
        assert order_id in text
    assert breaches[0][0] in text
    assert latest_scan in text


def test_status_on_an_empty_store_says_none(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "empty")
    from sinks.clickhouse.connection import SerializedClient
    from sinks.clickhouse.migrate import migrate

    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
    finally:
        client.close()
    done = _status(settings, "--once")
    assert done.returncode == 0, done.stderr
    assert "Open breaches: none" in done.stdout
    assert "Work in progress per stage: none" in done.stdout
