"""The faust engine on the real broker, replayed in event time (RULES.md "What must hold").

Every replay is compared with the in-memory oracle (`streams.rules.oracle`)
over the same file: same alert ids, same content, same dead-letter count —
with one worker or two, in another interleaving of the topics, and with a
worker killed by SIGKILL half-way and restarted.
"""

from __future__ import annotations

import os
import re
import signal
import time
from codecs import BOM_UTF8
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import alert_differences, reference_alerts, simulate
from kafka_groups import expel_members
from samples import order_created, padded_value
from worked_examples import BY_NAME, WORKED_EXAMPLES, WorkedExample, comparable

from chainwatch.replay import ReplayRun, no_progress, run_replay
from chainwatch.settings import Settings
from schemas.kafka_size import MAX_REQUEST_BYTES

# Each replay wait ends with the replay's own diagnosis (the partitions still behind)
# well before pytest's timeout: a 415-record replay takes ~10 s on a quiet machine.
REPLAY_TIMEOUT_S = 120
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

UNTIL = datetime(2027, 3, 12, tzinfo=UTC)


_quiet = no_progress


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated scenario small enough for several replays (every rule still fires)."""
    path = tmp_path_factory.mktemp("scenario") / "sim.ndjson"
    return simulate(path, days=2, orders_per_day=12, seed=11)


@pytest.fixture
def replay_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.mark.parametrize("example", WORKED_EXAMPLES, ids=lambda e: e.name)
def test_worked_example_replays_to_the_expected_alerts(
    replay_settings: Settings, example: WorkedExample
) -> None:
    result = run_replay(
        replay_settings,
        example.scenario,
        until=example.until,
        workers=1,
        partitions=4,
        progress=_quiet,
        timeout_s=240,
    )
    assert [comparable(a) for a in result.alerts] == [comparable(e) for e in example.expected()]
    assert result.dead_letters == example.dead_letters


def _replay(
    settings: Settings,
    scenario: Path,
    *,
    workers: int,
    interleaving: list[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """As `chainwatch replay` runs: the workers share the group before the first record."""
    run = ReplayRun(settings, scenario, partitions=4, progress=_quiet)
    try:
        run.prepare_topics()
        run.start_workers(workers)
        run.wait_for_group(workers)
        run.publish(interleaving)
        run.finish(UNTIL, timeout_s=REPLAY_TIMEOUT_S)
        result = run.results()
    finally:
        run.close()
    return result.alerts, result.dead_letters


def test_one_worker_matches_the_reference_engine(replay_settings: Settings, scenario: Path) -> None:
    expected, expected_dead = reference_alerts(scenario, UNTIL)
    alerts, dead = _replay(replay_settings, scenario, workers=1)
    assert {a["type"] for a in expected} >= {"stage_overdue", "order_disrupted", "unit_down"}
    assert not (diff := alert_differences(alerts, expected)), diff
    assert dead == expected_dead
    # and the worker settled its garbage collector once built (chainwatch.collector)
    (log,) = replay_settings.log_dir.glob("*-worker0.log")
    settled = re.search(r"collector_settled\W.*?frozen\W+(\d+)", log.read_text())
    assert settled is not None, log.read_text()[-3000:]
    assert int(settled.group(1)) > 10_000  # the modules, classes and schemas of start-up


def test_two_workers_over_four_partitions_match_the_reference(
    replay_settings: Settings, scenario: Path
) -> None:
    expected, expected_dead = reference_alerts(scenario, UNTIL)
    alerts, dead = _replay(replay_settings, scenario, workers=2)
    assert not (diff := alert_differences(alerts, expected)), diff
    assert dead == expected_dead


def test_another_interleaving_of_the_topics_gives_the_same_alerts(
    replay_settings: Settings, scenario: Path
) -> None:
    """Scans before the orders they belong to, unit status last: the join must catch up."""
    expected, _ = reference_alerts(scenario, UNTIL)
    alerts, _ = _replay(
        replay_settings,
        scenario,
        workers=1,
        interleaving=["scans", "unit-status", "orders", "crm.customers"],
    )
    assert not (diff := alert_differences(alerts, expected)), diff


def test_a_worker_killed_mid_replay_and_restarted_gives_the_same_alerts(
    replay_settings: Settings, scenario: Path, tmp_path: Path
) -> None:
    """SIGKILL at a point that is certainly mid-replay: half the input is not even published.

    The worker is killed as soon as it has committed progress on the first half
    (or has finished it); the second half goes to a new worker that must recover
    the tables from their changelogs. No step waits on time, only on conditions
    (nor on the killed worker's session: the test removes it from the group).
    """
    expected, expected_dead = reference_alerts(scenario, UNTIL)
    lines = scenario.read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    first.write_bytes(b"".join(lines[: len(lines) // 2]))
    second.write_bytes(b"".join(lines[len(lines) // 2 :]))

    run = ReplayRun(replay_settings, scenario, partitions=4, progress=_quiet)
    try:
        run.publish(part=first)
        (victim,) = run.start_workers(1)
        deadline = time.monotonic() + REPLAY_TIMEOUT_S
        first_lag: int | None = None
        while True:
            assert time.monotonic() < deadline, (
                f"the worker made no progress within {REPLAY_TIMEOUT_S} s"
            )
            assert victim.poll() is None, f"the worker exited with {victim.returncode}"
            lag = run.lag()
            if lag is not None and lag > 0:
                first_lag = first_lag or lag
            if lag == 0 or (first_lag is not None and lag is not None and lag < first_lag * 0.7):
                break
            time.sleep(0.1)  # poll interval of the condition, not a wait for it
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        # the group drops the killed worker at once, not at the end of its 10 s session
        # (the new worker's join waited for that): it recovers the tables all the same
        assert expel_members(run.settings.kafka.bootstrap, run.settings.engine.app_id)
        run.publish(part=second)
        run.start_workers(1, first=1)
        run.finish(UNTIL, timeout_s=REPLAY_TIMEOUT_S)
        result = run.results()
    finally:
        run.close()
    assert not (diff := alert_differences(result.alerts, expected)), diff
    assert result.dead_letters == expected_dead


def test_rocksdb_table_store_gives_the_same_alerts(
    settings_factory: Callable[..., Settings],
) -> None:
    """The RocksDB store (rocksdict) is a drop-in for the memory store."""
    settings = settings_factory(engine={"store": "rocksdb"})
    example = BY_NAME["example_3_unit_down"]
    written: list[Path] = []

    def look(_run: object, _result: object) -> None:  # the run's state is removed with it
        worker = settings.data_path / "worker0"
        written.extend([*worker.rglob("*.db"), *worker.rglob("CURRENT")])

    result = run_replay(
        settings,
        example.scenario,
        until=example.until,
        workers=1,
        partitions=4,
        progress=_quiet,
        timeout_s=240,
        on_results=look,
    )
    assert [comparable(a) for a in result.alerts] == [comparable(e) for e in example.expected()]
    assert written, "no RocksDB files were written"
    assert not (settings.data_path / "worker0").exists()  # removed when the run ended


def test_notepad_files_and_a_record_too_large_for_kafka_agree_with_the_reference(
    replay_settings: Settings, tmp_path: Path
) -> None:
    """Two worked examples saved by Notepad (a byte order mark, CR LF) and put together
    by `cat`, then an order too large for Kafka. Before: the reference helper kept the
    marks the replay strips (each file's first record a dead letter for the oracle only),
    and the oracle took the order the replay refuses (its alerts, and no dead letter)."""
    parts = [BY_NAME["example_2_late_handoff_qc"], BY_NAME["example_3_unit_down"]]
    huge = order_created(
        order_id="PO-9", placed_at="2027-03-02T08:00:00Z", due_at="2027-03-20T17:00:00Z"
    )
    value = padded_value(huge, b"PO-9", MAX_REQUEST_BYTES + 1)
    scenario = tmp_path / "notepad.ndjson"
    scenario.write_bytes(
        b"".join(BOM_UTF8 + e.scenario.read_bytes().replace(b"\n", b"\r\n") for e in parts)
        + b'{"topic": "orders", "key": "PO-9", "value": '
        + value
        + b"}\r\n"
    )
    until = datetime(2027, 3, 31, tzinfo=UTC)

    expected, expected_dead = reference_alerts(scenario, until)
    result = run_replay(
        replay_settings, scenario, until=until, workers=1, partitions=4,
        progress=_quiet, timeout_s=240,
    )  # fmt: skip

    assert not (diff := alert_differences(result.alerts, expected)), diff
    assert result.dead_letters == expected_dead == 1  # the order: the examples have none
    shown = {a["alert_id"] for e in parts for a in e.expected()}
    assert shown <= {a["alert_id"] for a in expected}
    assert not any(a.get("order_id") == "PO-9" for a in expected)
