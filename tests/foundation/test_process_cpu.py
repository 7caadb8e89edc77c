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
