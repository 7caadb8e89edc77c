"""`chainwatch ARGS` through the CLI's `main` in the test's own process.

A console-script subprocess spends 1-2 s importing before it reads its command line (more
on a loaded machine), so a test of what the command line's mistakes say runs `main` here
and keeps one subprocess test per command family for the real entry point. The run sees
only the `CHAINWATCH_` variables it is given, from the repository's root (where the
examples are), as `python -m chainwatch` does in those tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Answer:
    returncode: int
    stdout: str
    stderr: str


def cli_in_process(
    argv: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *,
    settings_built: bool,
) -> Answer:
    """`main(argv)` with `env` as its only `CHAINWATCH_` variables. With `settings_built`
    the settings are built here first: the CLI's own build configures the process's
    logging (this one's, pytest's). Without, a run that reads them fails the test."""
    from chainwatch import cli_context
    from chainwatch.cli import main
    from chainwatch.settings import Settings

    for name in [k for k in os.environ if k.upper().startswith("CHAINWATCH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    if settings_built:
        monkeypatch.setitem(cli_context.state, "settings", Settings())
    else:
        monkeypatch.delitem(cli_context.state, "settings", raising=False)
    with _background_lines_on_stderr():
        code = main(argv)
    captured = capsys.readouterr()
    if not settings_built:
        assert "settings" not in cli_context.state, "the settings were read"
    return Answer(code, captured.out, captured.err)


@contextmanager
def _background_lines_on_stderr() -> Iterator[None]:
    """structlog as the test left it prints to stdout, and what another thread of the test
    logs while the command runs (a notifier the test runs) was read as the command's output
    (a `silences list` whose first line was a dated log line). A configured process logs to
    stderr (chainwatch.logs); so does this one meanwhile, where structlog prints."""
    config = structlog.get_config()
    if not isinstance(config["logger_factory"], structlog.PrintLoggerFactory):
        yield
        return
    meanwhile = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(logger_factory=meanwhile)
    try:
        yield
    finally:  # unless the command set logging up itself (then it stays, as it did)
        if structlog.get_config()["logger_factory"] is meanwhile:
            structlog.configure(logger_factory=config["logger_factory"])
