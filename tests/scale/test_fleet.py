"""Opt-in (`make test-fleet`, marker `fleet`): a 4-worker fleet over 8 partitions.

~50,000 simulated records replayed by 1 worker, by 2, and by 4 workers of which one is
killed (SIGKILL) mid-run and a fifth added: each ends with the reference engine's
alerts and count of dead letters (the reference counts them; compared as soon as the
run ends). The last run also shows that the killed worker left records it owned
uncommitted (others had to redo them) and that the added worker took partitions.

About 2 minutes on a quiet 2-core machine (2026-12-02 night: 50,775 records, 1 worker
34 s, 2 workers 36 s, 4 with a kill and an addition 45 s; tens of minutes before
replays deferred their derivations), 3-5 on a busy one (docs/scaling.md), still never
in the default run (pyproject addopts: -m "not fleet").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from bench_scripts import load_bench

from chainwatch.settings import Settings

pytestmark = [pytest.mark.fleet, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(3 * 3600)
def test_four_workers_with_a_kill_and_an_addition_match_one_worker(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    fleet = load_bench("fleet", "fleet_bench")
    days, per_day = 30, 107  # 105 gave 49,878 records (main, 2026-11-30)
    scenario = fleet.simulate(tmp_path / "fleet.ndjson", days=days, orders_per_day=per_day, seed=14)
    with scenario.open("rb") as lines:
        records = sum(1 for _ in lines)
    assert records >= 50_000
    until = fleet.until_for(days)
    settings = settings_factory()
    expected, expected_dead = fleet.reference(scenario, until, settings.engine.limits())
    runs = (
        {"workers": 1},
        {"workers": 2},
        {"workers": 4, "kill_and_add": True},
    )
    walls = []
    for kwargs in runs:  # each compared at once: a wrong first run fails in minutes
        run = fleet.run_fleet(settings, scenario, until=until, **kwargs)
        walls.append(f"{run.label}{' (kill+add)' if kwargs.get('kill_and_add') else ''} "
                     f"{run.wall_s:.0f}s{run.stalls()}{run.kill()}")  # fmt: skip
        print(f"\n{records} records: {', '.join(walls)}", flush=True)
        diff = fleet.differences(expected, expected_dead, run)
        assert diff is None, diff
        # a kill that left nothing to redo, or an addition that took nothing, would
        # pass the comparison as well as a run without them
        assert run.kill_unproven() is None, run.kill_unproven()
    assert run.killed_owned is not None, "the last run kills a worker"
