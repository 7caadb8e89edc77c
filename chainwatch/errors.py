"""Errors a user can fix, reported as one line without a traceback.

Anything raising `UserError` is caught by the CLI, printed as `error: <message>`
and turned into a non-zero exit; `--debug` shows the traceback as well. A
`UsageError` (a bad option or argument that only the command can find) is
reported as click's own usage errors are: exit 2, the line ending with the
command whose `--help` to read. The libraries never import this module: they
raise their own types (`PlanError`, `SinkError`, `PublishError`), which the CLI
reports the same way (`USER_ERRORS`).
"""

from __future__ import annotations

from dashboards.errors import PublishError
from schemas.plan import PlanError
from sinks.errors import SinkError


class UserError(Exception):
    """A problem in the environment or the input that the user can fix; says how."""

    exit_code = 1


class UsageError(UserError):
    """The command line's own fault, found after click parsed it: an option's value click
    cannot judge (a timestamp, NAME=RATE), a missing or conflicting option. Not click's
    `UsageError`, so the modules below the CLI raise it without importing click; the
    message names the option first, as click's own say which one."""

    exit_code = 2


class Interrupted(UserError):
    """Ctrl-C (SIGINT) stopped the command; the message says what became of its work.
    Without it a replay or a backtest ended with exit status 130 and no word."""

    exit_code = 130


USER_ERRORS: tuple[type[Exception], ...] = (UserError, PlanError, SinkError, PublishError)
"""What the CLI reports as one line: `UserError` and the libraries' errors a user can fix
(a bad SLA plan is the user's file, an unreachable store the user's environment)."""


def exit_code(exc: BaseException) -> int:
    """The exit status of a command that stopped on `exc` (one of `USER_ERRORS`)."""
    return exc.exit_code if isinstance(exc, UserError) else 1
