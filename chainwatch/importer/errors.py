"""The importer's errors: one line each, reported by the CLI like every `UserError`."""

from __future__ import annotations

from chainwatch.errors import UserError
from schemas.text import shorten

_MAX_REASON = 200


class ImportFailed(UserError):
    """The import cannot go on (a file, the mapping, Kafka); the message says what to fix.

    A `UserError`, so also one raised outside the command's own handlers (opening
    `--rejects`) is a one-line error, never an "internal error".
    """


class FileBroken(ImportFailed):
    """A file turned out unreadable after some of its rows were used.

    The message says how many rows were read; the writers add what became of
    them (a scenario is not written, Kafka has what was published).
    """


class ImportInterrupted(ImportFailed):
    """Ctrl-C (SIGINT) stopped the import; the message says what became of its rows.

    Without it the import ended with exit status 130 and no word on what was
    published (or that the scenario was not written).
    """

    exit_code = 130


def one_line(exc: BaseException) -> str:
    """An exception as a short line: its type and the start of its message."""
    text = shorten(" ".join(str(exc).split()), _MAX_REASON)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
