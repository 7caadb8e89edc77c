"""`chainwatch replay`: Replay a scenario file in event time and print the final alerts"""

from __future__ import annotations

import typer

from chainwatch.cli_context import not_built

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("replay", context_settings=PASS_THROUGH)
    def replay() -> None:
        """Replay a scenario file in event time and print the final alerts (not built yet)."""
        not_built("replay", "monitoring engine issue")
