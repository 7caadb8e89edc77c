"""Waiting until a socket, pipe or pidfd has something to read, for descriptors of any number.

`select.select` refuses a descriptor numbered 1024 or more ("filedescriptor out of
range in select()"), and one xdist session running half the suite (~2,200 tests)
passes that: every embedded ClickHouse store opened keeps a few of chDB's threads, and
each of those threads three /proc files. `selectors.DefaultSelector` (epoll) has no
such bound.
"""

from __future__ import annotations

import io
import os
import selectors
import time
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
    it did not come whole within `timeout_s`: a bare `readline()` waited for a child stuck
    before that line (or halfway through it) until pytest's own timeout, which names no
    cause. (For a first line only: read a byte at a time from the descriptor, around the
    reader's buffer, so a line already in that buffer is not seen, and nothing past the
    line is taken from the pipe.) Bytes for a binary stream, text for a text one."""
    end = time.monotonic() + timeout_s
    fd = stream.fileno()
    line = bytearray()
    while not line.endswith(b"\n"):
        if not readable_within(fd, max(end - time.monotonic(), 0.0)):
            got = f" (only {bytes(line)[:200]!r})" if line else ""
            raise AssertionError(f"{what}: no line within {timeout_s:g} s{got}")
        byte = os.read(fd, 1)
        if not byte:
            break  # the child's end: what it wrote, as `readline()` gives it
        line += byte
    if isinstance(stream, io.TextIOBase):
        return line.decode(stream.encoding or "utf-8")
    return bytes(line)
