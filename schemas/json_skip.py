"""Skipping a JSON value without parsing it: one C-level regex step, no Python objects.

The gateway finds the items of a request body so (`streams.ingest.body`), and the replay
the `value` of a scenario line (`schemas.replay.value_spans`): parsing a hostile value of
megabytes built millions of objects only to learn where it ends.
"""

from __future__ import annotations

import re
from typing import Final

_TEXT: Final = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'


def _container(levels: int) -> bytes:
    """A bracketed value with at most `levels` of nested brackets (the source of a regex)."""
    content = rb"[^\"\[\]{}]*+(?:" + _TEXT + rb"[^\"\[\]{}]*+)*+"
    container = rb"[\[{]" + content + rb"[\]}]"
    for _ in range(levels - 1):
        content = rb"[^\"\[\]{}]*+(?:(?:" + _TEXT + rb"|" + container + rb")[^\"\[\]{}]*+)*+"
        container = rb"[\[{]" + content + rb"[\]}]"
    return container


def value_pattern(levels: int) -> re.Pattern[bytes]:
    """One JSON value (an array element, an object member's value) with at most `levels`
    of nested brackets, up to (not including) the `,`, `]` or `}` after it, whitespace
    after it included - matched in one C-level step, without backtracking. Deeper nesting
    stops the match at a bracket. It checks structure only (strings end, brackets pair
    up), not that the value is JSON."""
    item = rb"[^\"\[\]{},]*+(?:(?:" + _TEXT + rb"|" + _container(levels) + rb")[^\"\[\]{},]*+)*+"
    return re.compile(item, re.DOTALL)


def single_value_pattern(levels: int) -> re.Pattern[bytes]:
    """`value_pattern` for one value alone: a string, a bracketed value or a word (a
    number, `true`), without the whitespace after it; what follows it is no part of it
    (a line that forgot the `,` after a value has its next member read as such). No
    match for nothing, or for a value nested deeper than `levels`."""
    word = rb"[^\"\[\]{},: \t\n\r]++"
    return re.compile(
        rb"(?:" + _TEXT + rb"|" + _container(levels) + rb"|" + word + rb")", re.DOTALL
    )
