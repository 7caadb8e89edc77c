"""`chainwatch replay SCENARIO --until T`: the engine in event time over a scenario file."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from chainwatch.cli_context import check_plan, err, require_kafka, settings
from chainwatch.errors import UserError
from schemas.common import UtcDatetime

_timestamp: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


def _parse_until(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return _timestamp.validate_python(value)
    except ValidationError:
        raise UserError(
            f"--until {value!r}: expected RFC 3339 with an offset, e.g. 2027-03-12T00:00:00Z"
        ) from None


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay(
        scenario: Annotated[Path, typer.Argument(help="NDJSON scenario file (CONTRACT.md).")],
        until: Annotated[
            str | None, typer.Option(help="Run the clock at least to this RFC 3339 time.")
        ] = None,
        workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes.")] = 1,
        partitions: Annotated[int, typer.Option(min=1, max=64, help="Partitions per topic.")] = 4,
        keep_topics: Annotated[
            bool, typer.Option(help="Keep the run's topics afterwards.")
        ] = False,
        verbose: Annotated[
            bool, typer.Option("--verbose", help="Show client-library logs on stderr.")
        ] = False,
    ) -> None:
        """Replay SCENARIO on fresh topics; print the final alerts as NDJSON sorted by alert_id."""
        from chainwatch.logs import route_library_logs
        from chainwatch.replay import run_replay

        cfg = settings()
        check_plan(cfg)
        require_kafka(cfg)
        library_log = cfg.log_dir / "replay.log"
        if not verbose:
            route_library_logs(library_log)
        with ProgressDisplay(err) as progress:
            result = run_replay(
                cfg,
                scenario,
                until=_parse_until(until),
                workers=workers,
                partitions=partitions,
                progress=progress,
                keep_topics=keep_topics,
            )
        out = sys.stdout.buffer
        for alert in result.alerts:
            out.write(orjson.dumps(alert, option=orjson.OPT_SORT_KEYS) + b"\n")
        out.flush()
        err.print(f"dead letters: {result.dead_letters}", highlight=False)
        if not verbose:
            err.print(f"[dim]client-library log: {library_log}[/]", highlight=False)


class ProgressDisplay:
    """A rich bar for countable steps (publishing, the engine's lag); other messages as lines.

    A `chainwatch.replay.Progress`: the replay reports, this draws. Without a
    terminal (CI, a pipe) rich prints no bar, only the lines.
    """

    def __init__(self, console: Console, *, label: str = "replay") -> None:
        self._label = label
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn(f"[dim]{label}:[/] {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    def __call__(
        self, message: str, /, *, done: int | None = None, total: int | None = None
    ) -> None:
        if done is None or total is None:
            self._progress.console.print(f"[dim]{self._label}:[/] {message}", highlight=False)
            return
        task = self._tasks.get(message)
        if task is None:
            task = self._tasks[message] = self._progress.add_task(message, total=total)
        self._progress.update(task, completed=done, total=total)
