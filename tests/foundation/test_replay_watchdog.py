"""The replay's stall watchdog: a group stuck with lag is restarted, a healthy one never is.

The lag probe is replaced by a scripted one (the broker's side of a stall is
faust's, tested through the engine's replays); the workers are real processes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chainwatch import replay
from chainwatch.errors import UserError
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
    monkeypatch.setattr(replay, "_lag", lambda _settings: lag())
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
