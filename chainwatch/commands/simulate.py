"""`chainwatch simulate`: Generate knitwear-chain traffic"""

from __future__ import annotations

import typer

from chainwatch.cli_context import not_built

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("simulate", context_settings=PASS_THROUGH)
    def simulate() -> None:
        """Generate knitwear-chain traffic (not built yet)."""
        not_built("simulate", "monitoring engine issue")
