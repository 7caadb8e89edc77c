"""`chainwatch gateway`: HTTP and EPCIS 2.0 ingest gateway"""

from __future__ import annotations

import typer

from chainwatch.cli_context import not_built

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    @app.command("gateway", context_settings=PASS_THROUGH)
    def gateway() -> None:
        """HTTP and EPCIS 2.0 ingest gateway (not built yet)."""
        not_built("gateway", "contract and ingest issue")
