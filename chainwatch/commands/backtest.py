"""`chainwatch backtest HISTORY --plan A.yaml --plan B.yaml [--until T] [--name NAME]`.

Validates every plan, checks Kafka and the store, then replays HISTORY once per
plan (`chainwatch.backtest.run`) and prints the comparison side by side. The
figures are computed in `chainwatch.backtest.compare`; this module only prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chainwatch.cli_context import err, out, require_kafka, settings
from chainwatch.commands.replay import _parse_until
from chainwatch.errors import UserError
from chainwatch.progress import ProgressDisplay

if TYPE_CHECKING:
    from chainwatch.backtest.compare import Comparison

#: Orders whose outcome differs, listed by name; the rest are counted.
SHOWN_DIFFERENCES = 20


def register(app: typer.Typer) -> None:
    @app.command("backtest")
    def backtest(
        history: Annotated[
            Path, typer.Argument(help="NDJSON replay scenario (e.g. from `chainwatch import`).")
        ],
        plan: Annotated[
            list[Path], typer.Option("--plan", help="An SLA plan YAML; repeat for each plan.")
        ],
        until: Annotated[
            str | None, typer.Option(help="Run the clock at least to this RFC 3339 time.")
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="A name for this backtest (default: the file name).")
        ] = None,
        verbose: Annotated[
            bool, typer.Option("--verbose", help="Show client-library logs on stderr.")
        ] = False,
    ) -> None:
        """Replay HISTORY once per --plan, store every run, print the plans side by side."""
        from chainwatch.backtest.run import load_plan_files, run_backtest
        from chainwatch.logs import route_library_logs
        from chainwatch.process import stop_signals_as_ctrl_c
        from schemas.files import not_a_file
        from sinks.clickhouse.connection import SerializedClient, StoreLocked, open_client
        from sinks.clickhouse.migrate import migrate

        until_at = _parse_until(until)
        why = not_a_file(history)
        if why is not None:
            raise UserError(f"history {history}: {why}")
        plans = load_plan_files(plan)
        cfg = settings()
        try:
            client = SerializedClient(open_client(cfg))
        except StoreLocked as exc:
            raise UserError(
                f"{exc}; a backtest writes its runs there: stop that process (a sink) "
                "for the backtest, or use a ClickHouse server (CHAINWATCH_CLICKHOUSE__URL)"
            ) from None
        library_log = cfg.log_dir / "backtest.log"
        try:
            require_kafka(cfg)
            if not verbose:
                route_library_logs(library_log)
            migrate(client, cfg)
            with (
                stop_signals_as_ctrl_c(),  # SIGTERM deletes the run as Ctrl-C does
                ProgressDisplay(err, label="backtest", log_format=cfg.log_format) as progress,
            ):
                result = run_backtest(
                    cfg, history, plans, client, until=until_at, name=name, progress=progress
                )
        finally:
            client.close()
        print_comparison(out, result.comparison)
        out.print(
            f"backtest {result.backtest_id}: runs stored in backtest_runs",
            highlight=False,
            soft_wrap=True,
        )
        for run in result.runs:
            out.print(
                f"  {run.plan_name}: run {run.run_id}, {run.published} records published, "
                f"{run.dead_letters} dead letters, {run.alerts} alerts",
                highlight=False,
                soft_wrap=True,
            )
        if not verbose:
            progress.say(f"client-library log: {library_log}", path=str(library_log))


def duration(seconds: float | None) -> str:
    """`2d 04h`, `5h 30m`, `-45m`, `12s`; `-` when there is no value."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    left = round(abs(seconds))
    days, left = divmod(left, 86400)
    hours, left = divmod(left, 3600)
    minutes, secs = divmod(left, 60)
    if days:
        return f"{sign}{days}d {hours:02d}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m"
    return f"{sign}{secs}s"


def print_comparison(console: Console, comparison: Comparison) -> None:
    """The figures as tables, one column per plan."""
    plans = comparison.plans
    names = [escape(p.plan) for p in plans]  # file names, not markup
    console.print("[bold]Plan backtest[/]")
    summary = Table()
    summary.add_column("")
    for plan_name in names:
        summary.add_column(plan_name, justify="right")
    summary.add_row("alerts", *(str(p.alerts) for p in plans))
    kinds = sorted({(t, s) for p in plans for t, s, _ in p.by_type_severity})
    for kind, severity in kinds:
        counts = [dict(((t, s), n) for t, s, n in p.by_type_severity) for p in plans]
        summary.add_row(
            f"  {kind} ({severity})", *(str(c.get((kind, severity), 0)) for c in counts)
        )
    summary.add_row("orders breached (order_overdue)", *(str(p.orders_breached) for p in plans))
    summary.add_row("orders warned (order_at_risk)", *(str(p.orders_warned) for p in plans))
    summary.add_row("breached orders warned before", *(str(p.breached_warned) for p in plans))
    summary.add_row("warning lead time, median", *(duration(p.lead_median_s) for p in plans))
    summary.add_row("warning lead time, p10", *(duration(p.lead_p10_s) for p in plans))
    console.print(summary)

    stages = list(dict.fromkeys(s.stage for p in plans for s in p.stage_lateness))
    if stages:
        console.print("[bold]Stage lateness[/] (stage_overdue): late visits: median / p95")
        lateness = Table()
        lateness.add_column("stage")
        for plan_name in names:
            lateness.add_column(plan_name, justify="right")
        for stage in stages:
            cells = []
            for p in plans:
                found = next((s for s in p.stage_lateness if s.stage == stage), None)
                if found is None:
                    cells.append("-")
                    continue
                cells.append(
                    f"{found.late}: {duration(found.median_s)} / {duration(found.p95_s)}"
                    + (f" (+{found.still_open} open)" if found.still_open else "")
                )
            lateness.add_row(stage, *cells)
        console.print(lateness)

    differing = comparison.differing
    if len(plans) < 2:
        return
    if not differing:
        console.print("orders whose outcome differs: none", highlight=False)
        return
    shown = differing[:SHOWN_DIFFERENCES]
    console.print(
        f"[bold]Orders whose outcome differs:[/] {len(differing)}"
        + (f" (first {len(shown)} shown)" if len(shown) < len(differing) else ""),
        highlight=False,
    )
    table = Table()
    table.add_column("order")
    for plan_name in names:
        table.add_column(plan_name)
    for diff in shown:
        table.add_row(escape(diff.order_id), *diff.outcomes)
    console.print(table)
