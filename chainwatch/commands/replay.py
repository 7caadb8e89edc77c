"""`chainwatch replay SCENARIO --until T`: the engine in event time over a scenario file."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import TypeAdapter, ValidationError

from chainwatch.cli_context import check_plan, err, settings
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
    ) -> None:
        """Replay SCENARIO on fresh topics; print the final alerts as NDJSON sorted by alert_id."""
        from chainwatch.replay import run_replay

        check_plan(settings())
        result = run_replay(
            settings(),
            scenario,
            until=_parse_until(until),
            workers=workers,
            partitions=partitions,
            progress=lambda msg: err.print(f"[dim]replay:[/] {msg}", highlight=False),
            keep_topics=keep_topics,
        )
        out = sys.stdout.buffer
        for alert in result.alerts:
            out.write(orjson.dumps(alert, option=orjson.OPT_SORT_KEYS) + b"\n")
        out.flush()
        err.print(f"dead letters: {result.dead_letters}", highlight=False)
