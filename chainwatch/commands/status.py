"""`chainwatch status`: Live terminal view of the chain"""

from __future__ import annotations

import typer

from chainwatch.cli_context import not_built

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("status", context_settings=PASS_THROUGH)
    def status() -> None:
        """Live terminal view of the chain (not built yet)."""
        not_built("status", "dashboards issue")
