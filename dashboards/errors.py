"""The dashboards' errors that a user can fix (the message says how).

The CLI reports them as it reports its own `UserError`: one line, non-zero exit.
"""

from __future__ import annotations


class PublishError(Exception):
    """Grafana refused or could not be reached, or a datasource URL is malformed."""
