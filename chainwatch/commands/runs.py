"""`chainwatch runs list|delete`: what replay and backtest runs left on Kafka and on disk.

A finished run deletes its topics, its consumer group and its workers' state; a run kept
(`replay --keep-topics`), failed with Kafka gone, or killed leaves them. These commands
find and delete them (`chainwatch.replay_run_list`, `chainwatch.replay_runs`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from chainwatch.cli_context import cell_text, err, float_option, settings
from chainwatch.errors import UserError

runs_app = typer.Typer(
    help="Replay and backtest runs left on Kafka or on this disk.", no_args_is_help=True
)

TimeoutOption = Annotated[
    float | None,
    float_option(
        "--timeout",
        min=1,
        max=300,
        help="Seconds each Kafka call may take (default: CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S "
        "+ 5, 20).",
    ),
]


@runs_app.command("list")
def list_runs(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per run, one per line.")
    ] = False,
    timeout: TimeoutOption = None,
) -> None:
    """List the runs on Kafka (topics replay-<id>.* and replay-<id>-*, group replay-<id>)
    and in <data_dir>/worker<N>/faust/replay-<id>; reads only, creates nothing."""
    from chainwatch.replay_run_list import list_runs as listed_runs

    cfg = settings()
    listing = listed_runs(cfg, timeout)
    out = sys.stdout
    if as_json:
        for run in listing.runs:
            out.write(orjson.dumps(run.as_json()).decode() + "\n")
    elif listing.runs:
        width = max(len("run"), *(len(run.run_id) for run in listing.runs))
        out.write(f"{'run':<{width}}  {'topics':>6}  {'group':<12}  worker state\n")
        for run in listing.runs:
            topics = "?" if run.topics is None else str(run.topics)
            group = run.status + (f" ({run.members})" if run.members else "")
            state = f"{len(run.state)} dir(s)" if run.state else "-"
            out.write(f"{run.run_id:<{width}}  {topics:>6}  {group:<12}  {state}\n")
    elif listing.kafka_error is None:
        out.write(f"no runs on Kafka at {cfg.kafka.bootstrap} or in {cfg.data_path}\n")
    out.flush()
    if listing.kafka_error is not None:
        raise UserError(
            f"the runs on Kafka are unknown: {listing.kafka_error} "
            f"(listed: the worker state in {cfg.data_path} only)"
        )


@runs_app.command("delete")
def delete_runs(
    run_ids: Annotated[
        list[str], typer.Argument(help="Run ids, as `chainwatch runs list` shows them.")
    ],
    timeout: TimeoutOption = None,
) -> None:
    """Delete each run's consumer group, topics and worker state; a run whose group has
    members (still running) is refused, and nothing of it deleted."""
    from chainwatch.replay_runs import delete_runs as deleted_runs

    cfg = settings()
    failed = 0
    for outcome in deleted_runs(cfg, run_ids, timeout):
        if isinstance(outcome, UserError):
            failed += 1
            err.print(f"[red]error:[/] {escape(cell_text(outcome))}", highlight=False)
        elif not outcome.found:
            failed += 1
            err.print(
                f"[red]error:[/] run {escape(outcome.run_id)}: nothing to delete (no consumer "
                f"group, topics or worker state of it on Kafka at {cfg.kafka.bootstrap} or in "
                f"{escape(cell_text(cfg.data_path))})",
                highlight=False,
            )
        else:
            sys.stdout.write(outcome.describe() + "\n")
    sys.stdout.flush()
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
