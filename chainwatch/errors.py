"""Errors a user can fix, reported as one line without a traceback.

Anything raising `UserError` is caught by the CLI, printed as `error: <message>`
and turned into a non-zero exit; `--debug` shows the traceback as well.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the environment or the input that the user can fix; says how."""

    exit_code = 1
