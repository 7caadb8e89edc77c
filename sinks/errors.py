"""The sinks' errors that an operator can fix (the message says how).

The CLI reports them as it reports its own `UserError`: one line, non-zero exit.
"""

from __future__ import annotations


class SinkError(Exception):
    """A problem in the sink's environment (the store, the broker it was filled from)."""
