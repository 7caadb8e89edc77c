"""CPU time a process has used, read from `/proc/<pid>/stat` (Linux).

The replay's stall watchdog (`chainwatch.replay.wait_until_idle`) tells a worker busy in
a long step from a stuck one by it: the worker's own answers (`/readyz`) need its event
loop, which a long step holds, so a working worker looked as silent as a stuck one. The
kernel's count needs nothing from the worker. Where there is no `/proc` (macOS, Windows)
nothing is measured, and the watchdog decides as it did before it had this.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
"""Where the kernel shows its processes (a test points it at a directory of its own)."""


def _clock_ticks() -> int | None:
    """The unit of `/proc/<pid>/stat`'s CPU times, per second (None: not a POSIX system)."""
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return None


_TICKS = _clock_ticks()


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time process `pid` has used, every thread of it counted and
    none of its children (a faust worker's work is its own threads'); None where it
    cannot be read: no `/proc` (not Linux), the process gone, a line not as expected."""
    if _TICKS is None:
        return None
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # field 2, the process's name, is in parentheses and may hold spaces and ")" itself
    fields = stat.rpartition(b")")[2].split()
    try:  # fields 14 and 15 of proc(5): utime, stime; the 3rd (state) is the first here
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (IndexError, ValueError):
        return None


class CpuShares:
    """How much of one core each of some processes has used since a mark.

    `mark` reads every process's CPU time; `busiest` reads them again and gives the
    largest share of one core any of them used in between (0.5: half a core).
    """

    def __init__(self) -> None:
        self._since = time.monotonic()
        self._start: dict[int, float] = {}

    def mark(self, pids: Iterable[int]) -> None:
        """Start measuring `pids` now (a process that cannot be read is left out)."""
        self._since = time.monotonic()
        self._start = {pid: used for pid in pids if (used := cpu_seconds(pid)) is not None}

    def busiest(self) -> float | None:
        """The largest share of a core one marked process used since the mark; None when
        none could be measured (no `/proc`), or no time has passed."""
        elapsed = time.monotonic() - self._since
        if elapsed <= 0:
            return None
        shares = [
            (used - start) / elapsed
            for pid, start in self._start.items()
            if (used := cpu_seconds(pid)) is not None
        ]
        return max(shares, default=None)
