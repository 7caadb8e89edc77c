"""How much of a while a process spent working, as the kernel counts it (Linux `/proc`).

The replay's stall watchdog (`chainwatch.replay.wait_until_idle`) tells a worker busy in
a long step from a stuck one by it: the worker's own answers (`/readyz`) need its event
loop, which a long step holds, so a working worker looked as silent as a stuck one. The
kernel's counts need nothing from the worker. Two of them, the first preferred:

- runnable: the time the process's main thread (a worker's event loop, where faust runs
  its agents' steps: tests/foundation/test_replay_watchdog.py starts a worker to check)
  was on a CPU or waiting for one, `/proc/<pid>/task/<pid>/schedstat`. A loop in a step
  never sleeps, so it is runnable all along whatever the load; an idle or stuck loop
  sleeps between its timers. (What `replay.WORKING_RUNNABLE_SHARE` measured.)
- CPU: user plus system time of all its threads, `/proc/<pid>/stat`, only where the
  kernel keeps no schedstat (built without `CONFIG_SCHED_INFO`: no file, or zeros). It
  cannot tell the two apart on a loaded machine: a step gets only its share of the
  cores, and a stuck worker's timers may use more than an idle one's.

Where there is no `/proc` (macOS, Windows) nothing is measured, and the watchdog decides
as it did before it had this.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


def runnable_seconds(pid: int) -> float | None:
    """Time the main thread of process `pid` has spent on a CPU plus waiting for one
    (its run queue), in seconds; None where it cannot be read: no `/proc`, the process
    gone, a kernel that keeps no schedstat (no file; `0 0 0` where it is switched off:
    a thread that ever ran has run time), a line not as expected."""
    try:
        line = (PROC / str(pid) / "task" / str(pid) / "schedstat").read_bytes()
    except OSError:
        return None
    try:  # proc(5): time on a CPU, time waiting on a run queue (ns), timeslices run
        on_cpu, waiting = (int(field) for field in line.split()[:2])
    except ValueError:  # too few fields, or not numbers
        return None
    if on_cpu <= 0:
        return None
    return (on_cpu + waiting) / 1e9


@dataclass(frozen=True)
class Use:
    """What one process did between a mark and a reading."""

    pid: int
    share: float
    """Of the time between: runnable, or a share of one core (0.5: half a core)."""
    runnable: bool
    """True: the main thread's runnable share (`runnable_seconds`); False: the process's
    CPU time (`cpu_seconds`), where the kernel keeps no schedstat."""


class ProcessUse:
    """How some processes spent the time since a mark.

    `mark` reads each process's counts; `since_mark` reads them again and gives each
    process's share of the time in between, by the best count it had at both readings.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()
        self._start: dict[int, tuple[float | None, float | None]] = {}

    def mark(self, pids: Iterable[int]) -> None:
        """Start measuring `pids` now (a process that cannot be read is left out)."""
        self._since = self._clock()
        counts = {pid: (runnable_seconds(pid), cpu_seconds(pid)) for pid in pids}
        self._start = {pid: c for pid, c in counts.items() if c != (None, None)}

    def since_mark(self) -> list[Use]:
        """Each marked process's use since the mark; none when nothing could be
        measured (no `/proc`), or no time has passed."""
        elapsed = self._clock() - self._since
        if elapsed <= 0:
            return []
        uses = []
        for pid, (runnable_start, cpu_start) in self._start.items():
            runnable = runnable_seconds(pid) if runnable_start is not None else None
            if runnable is not None and runnable_start is not None:
                uses.append(Use(pid, (runnable - runnable_start) / elapsed, runnable=True))
            elif (cpu := cpu_seconds(pid)) is not None and cpu_start is not None:
                uses.append(Use(pid, (cpu - cpu_start) / elapsed, runnable=False))
        return uses
