"""`chainwatch notify`: deliver alerts to the webhooks of the subscriptions file."""

from __future__ import annotations

from typing import Annotated

import typer

from chainwatch.cli_context import err, settings


def register(app: typer.Typer) -> None:
    @app.command("notify")
    def notify(
        drain: Annotated[
            bool, typer.Option(help="Exit once caught up and every delivery has finished.")
        ] = False,
        check: Annotated[
            bool, typer.Option("--check", help="Only validate the subscriptions file.")
        ] = False,
    ) -> None:
        """Send signed webhooks (Standard Webhooks) for alerts, with retries and a delivery log."""
        from chainwatch.notify_runner import load_configured, run_notify

        cfg = settings()
        if check:
            subs = load_configured(cfg)
            for endpoint in subs.endpoints:
                err.print(f"ok  {endpoint.name}  {endpoint.host}  format={endpoint.format}")
            return
        stats = run_notify(cfg, drain=drain)
        over = f"{stats.endpoints} endpoint{'s' if stats.endpoints != 1 else ''}"
        err.print(
            f"notify: {stats.alerts} alert records read ({stats.invalid} invalid); "
            f"over {over}: {stats.delivered} delivered, {stats.gave_up} given up, "
            f"{stats.silenced} silenced, "
            f"{stats.repeats} repeats not delivered again, "
            f"{stats.finished} finished before a restart not delivered again"
        )
        if drain and stats.held is not None:
            held = sum(stats.held.values())
            each = ", ".join(f"{name} {n}" for name, n in stats.held.items() if n)
            err.print(
                f"notify: {held} alert{'s' if held != 1 else ''} left held by a silence"
                + (f" ({each}), sent when their silence ends by a running notifier" if held else "")
            )
