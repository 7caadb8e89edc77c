"""Text shown back to a user in an error line, bounded.

A value out of a user's file (a cell of 5,000 digits, a YAML key, a time zone
name) is echoed into messages and logs; unbounded, one hostile value made every
such line as long as itself. In `schemas` (no shape, but the one package the
importer, the engine, the gateway and the sinks all stand on), like `deadline`.
"""

from __future__ import annotations

from typing import Final

SHOWN: Final = 40
"""The most characters of one value (a number, a time) a message repeats."""


def shorten(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and `...`."""
    return text if len(text) <= limit else f"{text[:limit]}..."


def capped(text: str, *, quoted: bool, digits: bool = False) -> str:
    """A value as a rejection repeats it: `quoted` as Python writes it (a cell of U+00A0
    reads `'\\xa0'`, not a blank), and when longer than `SHOWN` its start, `...` and its
    size (in `digits` for a number): a cell of 5,000 digits or a 1 MB time was echoed
    whole into every rejects line, log and dead letter's reason."""
    head = text[:SHOWN]
    shown = repr(head) if quoted else head
    if len(text) <= SHOWN:
        return shown
    size = f"{sum(c.isdigit() for c in text):,} digits" if digits else f"{len(text):,} characters"
    return f"{shown}... ({size})"
