"""The dashboards' errors that a user can fix (the message says how).

The CLI reports them as it reports its own `UserError`: one line, non-zero exit.
"""

from __future__ import annotations


class PublishError(Exception):
    """Grafana refused or could not be reached, or a datasource URL is malformed.

    `status` is the HTTP status when Grafana answered with an error (404: missing).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OptionError(PublishError):
    """A URL or the token given to `publish` is malformed, found before Grafana is called:
    the caller's fault, not Grafana's (the CLI says so as a usage error, exit 2). The
    message names the option it came from."""


class ExportError(Exception):
    """The export directory cannot be created or written (the message names the path)."""
