"""A stand-in for a module's structlog logger that records every call (tests assert on
the lines a failure logs, without parsing rendered output)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Lines:
    """Stands in for a module's structlog logger: records every call."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def emit(event: str, **fields: Any) -> None:
            self.lines.append({"level": level, "event": event, **fields})

        return emit

    def named(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["event"] == event]
