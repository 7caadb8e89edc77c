"""How user-facing commands show long work (publishing, waiting for the engine, draining).

One `ProgressDisplay` is a `chainwatch.replay.Progress`: the replay machinery
reports messages, optionally with `done` of `total`; the display chooses how to
show them once, from where stderr goes:

* ``bar``: stderr is a terminal and logs are not JSON: a rich bar per countable
  step, other messages as dim lines above the bars;
* ``lines``: stderr is a pipe or a file (CI, `2> log`): plain lines, a countable
  step at most once per `interval_s` (plus its first and its last report), so a
  long wait leaves a trace without flooding the file;
* ``json``: `CHAINWATCH_LOG_FORMAT=json`: never a bar; every line is a JSON log
  event (`event`, `done`, `total`) through the process's structlog renderer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from chainwatch.cli_context import cell_text

Mode = Literal["bar", "lines", "json"]

#: Seconds between two plain lines of one countable step (`lines` and `json` modes).
LINE_INTERVAL_S = 5.0


def display_mode(console: Console, log_format: str) -> Mode:
    """`json` with JSON logs, `bar` on a terminal, `lines` otherwise."""
    if log_format == "json":
        return "json"
    return "bar" if console.is_terminal else "lines"


class ProgressDisplay:
    """Shows a replay's (or a backtest's) progress on `console` (stderr) in one `Mode`."""

    def __init__(
        self,
        console: Console,
        *,
        label: str = "replay",
        log_format: str = "console",
        mode: Mode | None = None,
        interval_s: float = LINE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console = console
        self._label = label
        self.mode: Mode = mode or display_mode(console, log_format)
        self._interval_s = interval_s
        self._clock = clock
        self._last_line: dict[str, tuple[float, int | None, int | None]] = {}
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        if self.mode == "bar":
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn(f"[dim]{escape(label)}:[/] {{task.description}}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> ProgressDisplay:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(
        self, message: str, /, *, done: int | None = None, total: int | None = None
    ) -> None:
        countable = done is not None and total is not None
        if self._bar is not None and countable:
            task = self._tasks.get(message)
            if task is None:
                task = self._tasks[message] = self._bar.add_task(
                    escape(cell_text(message)), total=total
                )
            self._bar.update(task, completed=done, total=total)
            return
        if not self._line_due(message, done, total):
            return
        if self._bar is not None:
            self._bar.console.print(
                f"[dim]{escape(self._label)}:[/] {escape(cell_text(message))}", highlight=False
            )
            return
        self._line(message, done, total)

    def say(self, message: str, /, **fields: object) -> None:
        """A result line (`dead letters: 6`): as written, or a JSON event with `fields`."""
        if self.mode == "json":
            from chainwatch.logs import get_logger

            get_logger(f"chainwatch.{self._label}").info(message, **fields)
            return
        self._console.print(cell_text(message), highlight=False, markup=False)

    def _line_due(self, message: str, done: int | None, total: int | None) -> bool:
        """The first report of a step, its last, and one per interval in between.

        A countable report repeating the figures of the line printed before is
        never due; a message without figures is due again after the interval
        (a wait that says "waiting for the engine" every 2 s says it every 5 s).
        """
        now = self._clock()
        seen = self._last_line.get(message)
        if seen is not None:
            at, was_done, was_total = seen
            if done is not None and (done, total) == (was_done, was_total):
                return False
            if (done is None or done != total) and now - at < self._interval_s:
                return False
        self._last_line[message] = (now, done, total)
        return True

    def _line(self, message: str, done: int | None, total: int | None) -> None:
        if self.mode == "json":
            from chainwatch.logs import get_logger

            fields = {} if done is None else {"done": done, "total": total}
            get_logger(f"chainwatch.{self._label}").info(message, **fields)
            return
        count = "" if done is None else f": {done}/{total}"
        shown = cell_text(message)  # a path of the user's in it (a log dir), escaped
        self._console.print(f"{self._label}: {shown}{count}", highlight=False, markup=False)
