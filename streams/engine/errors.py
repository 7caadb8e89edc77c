"""How the engine names a failure in its logs and dead letters."""

from __future__ import annotations


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 1000 else text[:997] + "..."
