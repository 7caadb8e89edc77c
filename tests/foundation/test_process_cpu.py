"""The CPU time of a process as the kernel counts it (`chainwatch.process_cpu`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chainwatch import process_cpu


def test_cpu_seconds_reads_user_and_system_time_after_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process may name itself with spaces and parentheses (`prctl`): the fields are
    counted from the name's last ')', or a name like this one shifted them."""
    monkeypatch.setattr(process_cpu, "PROC", tmp_path)
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_bytes(
        b"42 (a) S 1 (b) R 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 9 20 0 3 0 1000\n"
    )
    assert process_cpu.cpu_seconds(42) == 300 / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("stat", [None, b"42 (a) S 1 2\n", b"42 (a) S 1 42 42 0 -1 x y z w u s\n"])
def test_cpu_seconds_is_unknown_when_it_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stat: bytes | None
) -> None:
    """No /proc (macOS), the process gone, a line not as expected: None, never an error
    (the watchdog then decides without it)."""
    monkeypatch.setattr(process_cpu, "PROC", tmp_path)
    if stat is not None:
        (tmp_path / "42").mkdir()
        (tmp_path / "42" / "stat").write_bytes(stat)
    assert process_cpu.cpu_seconds(42) is None


def _schedstat(root: Path, pid: int, line: bytes) -> None:
    (root / str(pid) / "task" / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / str(pid) / "task" / str(pid) / "schedstat").write_bytes(line)


def test_runnable_seconds_is_the_main_threads_time_on_a_cpu_and_waiting_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main thread's (the worker's event loop), not the process's: another thread
    of it that burns CPU says nothing of whether the loop is in a step."""
    monkeypatch.setattr(process_cpu, "PROC", tmp_path)
    _schedstat(tmp_path, 42, b"1500000000 500000000 7\n")
    _schedstat(tmp_path / "42" / "task", 43, b"9000000000 9000000000 7\n")  # another thread
    assert process_cpu.runnable_seconds(42) == 2.0


@pytest.mark.parametrize("line", [None, b"0 0 0\n", b"12\n", b"a b c\n", b""])
def test_runnable_seconds_is_unknown_when_the_kernel_keeps_no_schedstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: bytes | None
) -> None:
    """No file (a kernel without CONFIG_SCHED_INFO), zeros (accounting switched off: a
    thread that ran has run time, so zeros never mean idle), a line not as expected."""
    monkeypatch.setattr(process_cpu, "PROC", tmp_path)
    if line is not None:
        _schedstat(tmp_path, 42, line)
    assert process_cpu.runnable_seconds(42) is None


def _stat(root: Path, pid: int, ticks: int) -> None:
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / str(pid) / "stat").write_bytes(
        f"{pid} (w) S 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 1\n".encode()
    )


def test_each_process_is_measured_by_the_runnable_share_where_the_kernel_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Process 1's schedstat is read, not its CPU time; process 2 has none, so its CPU
    time (a share of one core); process 3 cannot be read at all and is left out."""
    monkeypatch.setattr(process_cpu, "PROC", tmp_path)
    tck = os.sysconf("SC_CLK_TCK")
    now = [100.0]
    use = process_cpu.ProcessUse(clock=lambda: now[0])
    _stat(tmp_path, 1, 10 * tck)
    _schedstat(tmp_path, 1, b"1000000000 0 1\n")
    _stat(tmp_path, 2, 10 * tck)
    use.mark([1, 2, 3])
    now[0] += 10
    _stat(tmp_path, 1, 10 * tck + tck // 10)  # 0.1 s of CPU in 10 s: a loaded machine
    _schedstat(tmp_path, 1, b"2000000000 8000000000 90\n")  # runnable 9 s of 10
    _stat(tmp_path, 2, 15 * tck)  # 5 s of CPU in 10 s
    assert use.since_mark() == [
        process_cpu.Use(1, pytest.approx(0.9), runnable=True),
        process_cpu.Use(2, pytest.approx(0.5), runnable=False),
    ]
