"""Skipping a JSON value without parsing it: one C-level regex step, no Python objects.

The gateway finds the items of a request body so (`streams.ingest.body`), and the replay
the members of a scenario line (`schemas.replay_scan`): parsing a hostile value of
megabytes built millions of objects only to learn where it ends.
"""

from __future__ import annotations

import re
from typing import Final

_TEXT: Final = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
SCALAR_SOURCE: Final = rb"(?:" + _TEXT + rb'|[^"\[\]{},: \t\n\r]++)'
"""A string or a word (a number, `true`), as the source of a regex."""


def container_source(levels: int, *, empty_below: bool = False) -> bytes:
    """A bracketed value with at most `levels` of nested brackets, as the source of a
    regex; with `empty_below`, brackets with nothing but whitespace in them one level
    deeper. No match for a value nested deeper."""
    between = rb"[^\"\[\]{}]*+"
    if empty_below:
        container, rounds = rb"[\[{][ \t\n\r]*+[\]}]", levels
    else:
        container, rounds = (
            rb"[\[{]" + between + rb"(?:" + _TEXT + between + rb")*+[\]}]",
            levels - 1,
        )
    for _ in range(rounds):
        content = between + rb"(?:(?:" + _TEXT + rb"|" + container + rb")" + between + rb")*+"
        container = rb"[\[{]" + content + rb"[\]}]"
    return container


def value_pattern(levels: int) -> re.Pattern[bytes]:
    """One JSON value (an array element, an object member's value) with at most `levels`
    of nested brackets, up to (not including) the `,`, `]` or `}` after it, whitespace
    after it included - matched in one C-level step, without backtracking. Deeper nesting
    stops the match at a bracket. It checks structure only (strings end, brackets pair
    up), not that the value is JSON."""
    item = (
        rb"[^\"\[\]{},]*+(?:(?:" + _TEXT + rb"|" + container_source(levels)
        + rb")[^\"\[\]{},]*+)*+"
    )  # fmt: skip
    return re.compile(item, re.DOTALL)
