"""The replay's stall watchdog: a group stuck with lag is restarted, a healthy one never is.

The lag probe is replaced by a scripted one (the broker's side of a stall is
faust's, tested through the engine's replays); the workers are real processes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chainwatch import replay
from chainwatch.errors import UserError
from chainwatch.ops_server import serve_ops
from chainwatch.settings import Settings


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _script(monkeypatch: pytest.MonkeyPatch, lag: Callable[[], int]) -> None:
    monkeypatch.setattr(replay.LagProbe, "lag", lambda _probe: lag())
    monkeypatch.setattr(replay, "describe_lag", lambda _settings: "behind: t[0]=5")
    monkeypatch.setattr(replay, "STALL_AFTER_S", 0.5)
    monkeypatch.setattr(replay.time, "sleep", lambda _s: None)


def test_a_stuck_group_gets_its_workers_restarted_and_then_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[subprocess.Popen[bytes]]
) -> None:
    workers.append(_sleeper())
    restarted: list[subprocess.Popen[bytes]] = []

    def restart() -> list[subprocess.Popen[bytes]]:
        for proc in workers:
            proc.terminate()
        fresh = _sleeper()
        workers.append(fresh)
        restarted.append(fresh)
        return [fresh]

    _script(monkeypatch, lambda: 0 if restarted else 5)
    messages: list[str] = []
    replay.wait_until_idle(
        Settings(data_dir=tmp_path), list(workers), lambda m, **_c: messages.append(m),
        timeout_s=30, restart=restart,
    )  # fmt: skip
    assert len(restarted) == 1
    assert any("restarting the workers (1 of at most 3)" in m and "t[0]=5" in m for m in messages)


@pytest.mark.slow
def test_a_group_that_stays_stuck_is_an_error_after_the_last_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[subprocess.Popen[bytes]]
) -> None:
    workers.append(_sleeper())

    def restart() -> list[subprocess.Popen[bytes]]:
        fresh = _sleeper()
        workers.append(fresh)
        return [fresh]

    _script(monkeypatch, lambda: 5)
    with pytest.raises(UserError, match=r"stuck after 3 restarts .*t\[0\]=5"):
        replay.wait_until_idle(
            Settings(data_dir=tmp_path), list(workers), lambda m, **_c: None,
            timeout_s=60, restart=restart,
        )  # fmt: skip
    assert len(workers) == 4


def test_lag_that_keeps_falling_is_progress_not_a_stall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[subprocess.Popen[bytes]]
) -> None:
    workers.append(_sleeper())
    falling = iter([*range(400, 0, -1), 0, 0])
    _script(monkeypatch, lambda: next(falling))

    def restart() -> list[subprocess.Popen[bytes]]:
        raise AssertionError("a group making progress was restarted")

    replay.wait_until_idle(
        Settings(data_dir=tmp_path), list(workers), lambda m, **_c: None,
        timeout_s=30, restart=restart,
    )  # fmt: skip


def test_a_group_whose_workers_recover_their_tables_is_not_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[subprocess.Popen[bytes]]
) -> None:
    """Fresh workers recover every table before they commit anything (52 s measured under
    load, longer than STALL_AFTER_S): the watchdog restarted them mid-recovery, again and again."""
    workers.append(_sleeper())
    probes: list[bool] = []

    def busy() -> bool:  # recovering for five probes, then the lag falls
        probes.append(len(probes) < 5)
        return probes[-1]

    _script(monkeypatch, lambda: 5 if len(probes) < 5 else 0)
    clock = iter(range(100_000))  # every reading of the clock: one second later
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))

    def restart() -> list[subprocess.Popen[bytes]]:
        raise AssertionError("workers recovering their tables were restarted")

    messages: list[str] = []
    replay.wait_until_idle(
        Settings(data_dir=tmp_path), list(workers), lambda m, **_c: messages.append(m),
        timeout_s=1000, restart=restart, busy=busy,
    )  # fmt: skip
    assert probes == [True] * 5
    assert any("recovering its tables" in m for m in messages)


def test_a_stuck_group_is_restarted_when_no_worker_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[subprocess.Popen[bytes]]
) -> None:
    workers.append(_sleeper())
    restarted: list[subprocess.Popen[bytes]] = []

    def restart() -> list[subprocess.Popen[bytes]]:
        fresh = _sleeper()
        workers.append(fresh)
        restarted.append(fresh)
        return [fresh]

    _script(monkeypatch, lambda: 0 if restarted else 5)
    replay.wait_until_idle(
        Settings(data_dir=tmp_path), list(workers), lambda m, **_c: None,
        timeout_s=30, restart=restart, busy=lambda: False,
    )  # fmt: skip
    assert len(restarted) == 1


@pytest.mark.parametrize(
    ("ready", "state"),
    [
        ((False, {"reasons": ["recovering tables"]}), "busy"),
        ((False, {"reasons": ["rebalancing"]}), "busy"),
        ((False, {"reasons": ["starting: table recovery not finished"]}), "busy"),
        ((False, {"reasons": ["event loop stalled for 40 s"]}), "not ready"),
        ((True, {"reasons": []}), "ready"),
    ],
)
def test_worker_readiness_reads_the_workers_readyz(
    ready: tuple[bool, dict[str, object]], state: str
) -> None:
    """Against the ops server the worker runs (chainwatch.ops_server)."""
    server = serve_ops("127.0.0.1", 0, ready=lambda: ready)
    try:
        assert replay.worker_readiness("127.0.0.1", server.port) == state
    finally:
        server.stop()
    assert replay.worker_readiness("127.0.0.1", server.port) == "no answer"


def test_a_worker_that_does_not_answer_yet_counts_as_starting_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[subprocess.Popen[bytes]]
) -> None:
    """A worker needs 25-35 s under load before its ops server answers: the watchdog
    restarted fresh workers before they had even started."""
    scenario = tmp_path / "s.ndjson"
    scenario.write_text("")
    run = replay.ReplayRun(
        Settings(data_dir=tmp_path), scenario, partitions=1, progress=lambda m, **_c: None
    )
    worker = _sleeper()
    workers.append(worker)
    run.workers.append(worker)
    run.ops_ports[worker.pid] = replay.free_port("127.0.0.1")  # nobody answers there
    run.started_at[worker.pid] = time.monotonic()
    assert run.workers_busy()
    run.started_at[worker.pid] -= replay.WORKER_START_GRACE_S
    assert not run.workers_busy()  # past the grace: silent is not busy (the watchdog may act)


def test_the_wait_ends_at_the_first_reading_of_no_lag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[subprocess.Popen[bytes]]
) -> None:
    """A replay waits this out at every event-time window's end: a second reading of
    zero would cost each window a poll interval (why one suffices: its docstring)."""
    workers.append(_sleeper())
    readings = iter([7, 3, 0])
    probes: list[int] = []

    def lag() -> int:
        probes.append(next(readings))
        return probes[-1]

    _script(monkeypatch, lag)
    replay.wait_until_idle(Settings(data_dir=tmp_path), list(workers), lambda m, **_c: None,
                           timeout_s=30)  # fmt: skip
    assert probes == [7, 3, 0]
