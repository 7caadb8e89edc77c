"""Text shown back to a user in an error line, bounded.

A value out of a user's file (a cell of 5,000 digits, a YAML key, a time zone
name) is echoed into messages and logs; unbounded, one hostile value made every
such line as long as itself. In `schemas` (no shape, but the one package the
importer, the engine, the gateway and the sinks all stand on), like `deadline`.
"""

from __future__ import annotations


def shorten(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and `...`."""
    return text if len(text) <= limit else f"{text[:limit]}..."
