"""A ClickHouse store filled by the real pipeline: simulator → engine replay → sink.

Shared by the dashboard and status tests through the session fixture
`filled_store` (tests/conftest.py), so the replay runs once per test session.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from chainwatch.replay import ReplayRun, no_progress, stop_workers
from chainwatch.settings import Settings
from chainwatch.sink_runner import run_sink
from simulator import AnomalyRates, SimConfig, Summary, simulate, write_lines

# Orders over 12 days, cut mid-flow after 11 (an order takes ~10 days): some
# orders are completed, others in progress (WIP, at risk, stalled = open
# breaches). Unit incidents and stalls are frequent so every panel gets data.
SCENARIO = SimConfig(
    seed=1,
    days=12,
    orders_per_day=4,
    anomalies=AnomalyRates(unit_incident=0.3, stall=0.3),
)
CUT_AFTER = timedelta(hours=264)


def fill_store(root: Path, bootstrap: str) -> Settings:
    """Replay the scenario prefix on fresh topics, sink it into an embedded store there."""
    cutoff = SCENARIO.start + CUT_AFTER
    cut_ms = int(cutoff.timestamp() * 1000)
    scenario = root / "scenario.ndjson"
    with scenario.open("w", encoding="utf-8") as handle:
        records = (r for r in simulate(SCENARIO) if r.at_ms <= cut_ms)
        write_lines(records, handle, Summary())
    settings = Settings(
        data_dir=root / "data",
        kafka={"bootstrap_servers": bootstrap, "partitions": 2},
        log_level="warning",
    )
    run = ReplayRun(settings, scenario, partitions=2, progress=no_progress)
    try:
        run.publish()
        run.start_workers(1)
        run.finish(cutoff, timeout_s=240)
        stop_workers(run.workers)
        run_sink(run.settings, drain=True)
    finally:
        run.close()
    return run.settings
