"""The fleet bench's check that its run with a kill and an addition had both
(`FleetRun.kill_unproven`, bench/fleet.py), without a fleet: `make test-fleet` is the
only other place it runs, and a check that passes wrongly fails nothing there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_scripts import load_bench

fleet = load_bench("fleet", "fleet_bench_kill_proof")

TABLE = """\
Highwater for active changelog partitions:
+Highwater - Active-----+-----------+-----------+
| topic                 | partition | highwater |
+-----------------------+-----------+-----------+
| cw-x-orders-changelog | 6         | -1        |
| \u3003                    | 7         | 12        |
+-----------------------+-----------+-----------+
"""
"""What faust's recovery logs at a rebalance (`faust.utils.terminal.logtable`, no tty)."""


def _killed(owned: frozenset[int], handled: int, committed: int) -> Any:
    return fleet.FleetRun(
        "4 workers", 4, 1.0, 1, {}, 0,
        killed_owned=owned, killed_handled=handled, killed_committed=committed,
        added_owned=frozenset({6, 7}),
    )  # fmt: skip


def test_a_kill_with_records_handled_beyond_those_committed_proves_it(tmp_path: Path) -> None:
    log = tmp_path / "worker1.log"
    log.write_text(f"starting\n{TABLE}Worker ready\n")
    owned = fleet.owned_partitions(log)
    assert owned == frozenset({6, 7})
    assert _killed(owned, 38, 37).kill_unproven() is None
    assert _killed(owned, 38, 38).kill_unproven() is not None


def test_a_kill_of_a_worker_whose_partitions_its_log_does_not_show_proves_nothing(
    tmp_path: Path,
) -> None:
    """`run_fleet` reads the victim's partitions from its log, none when the table is not
    there, and compares what it handled with what the group committed on them: on no
    partition nothing is committed, so it was killed at its first record handled and the
    run passed for one with work left to redo ('owned partitions [], had handled 38 input
    records of which 0 were committed')."""
    log = tmp_path / "worker1.log"
    log.write_text("starting\nWorker ready\n")
    owned = fleet.owned_partitions(log) or frozenset()  # what `run_fleet` goes on with
    why = _killed(owned, 38, 0).kill_unproven()
    assert why is not None
    assert "partitions were not in its log" in why


def test_the_fleet_sizes_parse_and_a_bad_one_is_a_usage_error_before_any_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--runs 0` started a replay without workers that waited for ever; `--runs x` and
    `--days -1` ended in tracebacks, after simulating the scenario and running the
    reference engine for the first."""
    assert fleet.parse_args([]).runs == [(1, False), (2, False), (4, False), (4, True)]
    assert fleet.parse_args(["--runs", "1, 4k"]).runs == [(1, False), (4, True)]
    for argv in (["--runs", "0"], ["--runs", "x"], ["--runs", "4,17"], ["--days", "-1"]):
        with pytest.raises(SystemExit) as stopped:
            fleet.parse_args(argv)
        assert stopped.value.code == 2, argv
        assert "error: argument" in capsys.readouterr().err, argv
