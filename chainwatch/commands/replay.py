"""`chainwatch replay SCENARIO --until T`: the engine in event time over a scenario file."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from pydantic import TypeAdapter, ValidationError

from chainwatch.cli_context import check_plan, err, require_kafka, settings
from chainwatch.errors import UsageError, UserError
from chainwatch.progress import ProgressDisplay
from schemas.common import UtcDatetime

if TYPE_CHECKING:
    from chainwatch.replay_store import ReplaySink
    from chainwatch.settings import Settings
    from sinks.clickhouse.connection import SerializedClient

_timestamp: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


def _parse_until(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return _timestamp.validate_python(value)
    except ValidationError as exc:
        # the contract's own reason (no offset, no such day, outside 1971-2100): a time
        # past 2100 is RFC 3339 with an offset, and was refused as if it were not
        raise UsageError(f"--until {value!r}: {exc.errors()[0]['msg']}") from None


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay(
        scenario: Annotated[Path, typer.Argument(help="NDJSON scenario file (docs/replay.md).")],
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
        sink: Annotated[
            bool,
            typer.Option(
                "--sink",
                help="Also store the results (alerts, order state, dead letters) in ClickHouse "
                "under the run id (docs/replay.md).",
            ),
        ] = False,
        run_id: Annotated[
            str | None,
            typer.Option(
                "--run-id",
                help="With --sink: the id to store the run under (default: the run's own); "
                "the same id again replaces that run's stored results.",
            ),
        ] = None,
    ) -> None:
        """Replay SCENARIO on fresh topics; print the final alerts as NDJSON sorted by alert_id."""
        from chainwatch.logs import route_library_logs
        from chainwatch.process import stop_signals_as_ctrl_c
        from chainwatch.replay import run_replay

        until_at = _parse_until(until)
        if run_id is not None:
            from chainwatch.replay_store import check_run_id

            if not sink:
                raise UsageError("--run-id names a stored run: give it with --sink")
            check_run_id(run_id)
        cfg = settings()
        check_plan(cfg)
        require_kafka(cfg)
        library_log = cfg.log_dir / "replay.log"
        if not verbose:
            route_library_logs(library_log)
        store = _open_store(cfg) if sink else None
        on_results: ReplaySink | None = None
        try:
            with (
                stop_signals_as_ctrl_c(),  # SIGTERM deletes the run as Ctrl-C does
                ProgressDisplay(err, log_format=cfg.log_format) as progress,
            ):
                if store is not None:
                    from chainwatch.replay_store import ReplaySink

                    on_results = ReplaySink(
                        store,
                        scenario=scenario,
                        until=until_at,
                        workers=workers,
                        partitions=partitions,
                        progress=progress,
                        run_id=run_id,
                    )
                result = run_replay(
                    cfg,
                    scenario,
                    until=until_at,
                    workers=workers,
                    partitions=partitions,
                    progress=progress,
                    keep_topics=keep_topics,
                    on_results=on_results,
                )
        finally:
            if store is not None:
                store.close()
        out = sys.stdout.buffer
        for alert in result.alerts:
            out.write(orjson.dumps(alert, option=orjson.OPT_SORT_KEYS) + b"\n")
        out.flush()
        # result lines: as written on a terminal or in a pipe, JSON events with JSON logs
        progress.say(f"dead letters: {result.dead_letters}", dead_letters=result.dead_letters)
        if on_results is not None and on_results.stored is not None:
            stored = on_results.stored
            progress.say(
                f"stored as run {stored.run_id}: {stored.alerts} alerts, {stored.orders} orders, "
                f"{stored.dead_letters} dead letters in {on_results.seconds:.1f}s "
                f"(views replay_*_current, WHERE run_id = '{stored.run_id}')",
                run_id=stored.run_id,
                alerts=stored.alerts,
                orders=stored.orders,
                dead_letters=stored.dead_letters,
                seconds=round(on_results.seconds, 1),
            )
        if not verbose:
            progress.say(f"client-library log: {library_log}", path=str(library_log))


def _open_store(cfg: Settings) -> SerializedClient:
    """The configured ClickHouse, migrated, before anything runs (a locked store fails fast)."""
    from sinks.clickhouse.connection import SerializedClient, StoreLocked, open_client
    from sinks.clickhouse.migrate import migrate

    try:
        client = SerializedClient(open_client(cfg))
    except StoreLocked as exc:
        raise UserError(
            f"{exc}; `replay --sink` writes its run there: stop that process (a sink) "
            "for the replay, or use a ClickHouse server (CHAINWATCH_CLICKHOUSE__URL)"
        ) from None
    try:
        migrate(client, cfg)
    except BaseException:
        client.close()
        raise
    return client
