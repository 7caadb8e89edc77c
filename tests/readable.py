"""Waiting until a socket, pipe or pidfd has something to read, for descriptors of any number.

`select.select` refuses a descriptor numbered 1024 or more ("filedescriptor out of
range in select()"), and one xdist session running half the suite (~2,200 tests)
passes that: every embedded ClickHouse store opened keeps a few of chDB's threads, and
each of those threads three /proc files. `selectors.DefaultSelector` (epoll) has no
such bound.
"""

from __future__ import annotations

import selectors
from typing import IO, Any

Readable = int | IO[Any] | Any
"""A descriptor, or an object with `fileno()` (a socket, a pipe's file)."""


def readable_within(source: Readable, timeout_s: float) -> bool:
    """Whether `source` has something to read (or its end) within `timeout_s`."""
    with selectors.DefaultSelector() as selector:
        selector.register(source, selectors.EVENT_READ)
        return bool(selector.select(timeout_s))


def line_within(stream: IO[Any], timeout_s: float, what: str) -> Any:
    """The first line a child writes to its pipe, or an AssertionError naming `what` when
    none came within `timeout_s`: a bare `readline()` waited for a child stuck before
    that line until pytest's own timeout, which names no cause. (For a first line only:
    a line already in the reader's buffer is not seen by the wait.)"""
    if not readable_within(stream, timeout_s):
        raise AssertionError(f"{what}: no line within {timeout_s:g} s")
    return stream.readline()
