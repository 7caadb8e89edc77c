"""`chainwatch dashboards export|publish`: Grafana dashboards as code."""

from __future__ import annotations

import typer

from chainwatch.cli_context import not_built

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
    app.add_typer(group, name="dashboards")

    @group.command("export", context_settings=PASS_THROUGH)
    def export() -> None:
        """Write the dashboards' JSON (not built yet)."""
        not_built("dashboards export", "dashboards issue")

    @group.command("publish", context_settings=PASS_THROUGH)
    def publish() -> None:
        """Publish dashboards to Grafana (not built yet)."""
        not_built("dashboards publish", "dashboards issue")
