"""What every CLI command shares: the consoles and the settings built once per process."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from rich.console import Console

from chainwatch.errors import UserError
from chainwatch.logs import configure_logging
from chainwatch.settings import Settings

out = Console()
err = Console(stderr=True, soft_wrap=True)
state: dict[str, Any] = {"debug": False}


def settings() -> Settings:
    """The settings, built once per process; a malformed env value is a one-line error."""
    cached = state.get("settings")
    if isinstance(cached, Settings):
        return cached
    try:
        built = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "CHAINWATCH_" + "__".join(str(p).upper() for p in first["loc"])
        raise UserError(f"{where}: {first['msg']}") from None
    state["settings"] = built
    configure_logging(built.log_level, built.log_format)
    return built


def check_plan(cfg: Settings) -> None:
    """Load the SLA plan before anything touches Kafka: a bad file is a one-line error.

    Raises `schemas.plan.PlanError`, which `chainwatch.cli.main` reports like a `UserError`.
    """
    from schemas.plan import load_plan

    load_plan(cfg.engine.plan)
