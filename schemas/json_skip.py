"""Skipping a JSON value without parsing it: one C-level regex step, no Python objects.

The gateway finds the items of a request body so (`streams.ingest.body`), and the replay
the `value` of a scenario line (`schemas.replay.value_spans`): parsing a hostile value of
megabytes built millions of objects only to learn where it ends.
"""

from __future__ import annotations

import re


def value_pattern(levels: int) -> re.Pattern[bytes]:
    """One JSON value (an array element, an object member's value) with at most `levels`
    of nested brackets, up to (not including) the `,`, `]` or `}` after it, whitespace
    after it included - matched in one C-level step, without backtracking. Deeper nesting
    stops the match at a bracket. It checks structure only (strings end, brackets pair
    up), not that the value is JSON."""
    text = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
    content = rb"[^\"\[\]{}]*+(?:" + text + rb"[^\"\[\]{}]*+)*+"
    container = rb"[\[{]" + content + rb"[\]}]"
    for _ in range(levels - 1):
        content = rb"[^\"\[\]{}]*+(?:(?:" + text + rb"|" + container + rb")[^\"\[\]{}]*+)*+"
        container = rb"[\[{]" + content + rb"[\]}]"
    item = rb"[^\"\[\]{},]*+(?:(?:" + text + rb"|" + container + rb")[^\"\[\]{},]*+)*+"
    return re.compile(item, re.DOTALL)
