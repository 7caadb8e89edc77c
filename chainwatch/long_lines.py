"""Lines of a user's file read with a bound, so one line of gigabytes cannot exhaust memory.

`chainwatch import` (CSV, NDJSON) and `chainwatch replay` read files a line at
a time. A line longer than any record can be is not held: its first `limit`
bytes are kept, the rest is only streamed through SHA-256, and the caller gets
a `LongLine` (start, real size, hash) to dead-letter. Without the bound a
replay scenario with one 200 MB line took 4.3 GB of memory to parse, and a line
of a gigabyte or more ran the machine out of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import IO, Final, Protocol

from schemas.json_blank import json_blank

#: The longest line (CSV record, NDJSON line) an import holds: a record this
#: large could never be published (Kafka's 1 MiB message limit).
MAX_LINE_BYTES: Final = 1 << 20
#: How much of a too-long line's rest is read at a time.
CHUNK: Final = 1 << 20


class LongLine(Exception):
    """A line over its limit, read to its end through a hash, its start kept.

    `blank`: it is all JSON whitespace (`schemas.json_blank`), so a reader that skips
    blank lines skips it too (a replay's 9 MB of spaces was a `processing_error` dead
    letter, counted in totals).
    """

    def __init__(self, start: bytes, size: int, sha256: str, *, blank: bool = False) -> None:
        super().__init__(start[:80])
        self.start, self.size, self.sha256, self.blank = start, size, sha256, blank

    def describe(self, limit: int = MAX_LINE_BYTES, what: str = "the line") -> str:
        return (
            f"{what} is {self.size:,} bytes, longer than any record can be "
            f"({limit:,}); SHA-256 {self.sha256}"
        )


def first_read(limit: int = MAX_LINE_BYTES) -> int:
    """A line's first read: the longest line the limit allows and its CR LF."""
    return limit + 2


def too_long(line: str | bytes, limit: int = MAX_LINE_BYTES) -> bool:
    """Whether a line read with a limit of `first_read(limit)` is longer than `limit`.

    A read that ends in no line ending stopped at its size: the line goes on. Else
    exactly one ending is left out (CR LF, LF; a lone CR ends a line of a text file
    read with `newline=""`, not of a binary one). Stripping every trailing CR counted
    a read ending in CR CR as short: a line at the limit was split in two, two dead
    letters, every later line number off by one.
    """
    if len(line) <= limit:
        return False
    if isinstance(line, str):
        endings: tuple[str | bytes, ...] = ("\r\n", "\n", "\r")
    else:
        endings = (b"\r\n", b"\n")
    for ending in endings:
        if line.endswith(ending):  # type: ignore[arg-type]
            return len(line) - len(ending) > limit
    return True


def rest_of_line(
    read_piece: Callable[[], tuple[bytes, bool]],
    start: bytes,
    ended: bool,
    limit: int = MAX_LINE_BYTES,
) -> LongLine:
    """Read the rest of a too-long line through SHA-256; size and hash leave out its ending.

    `read_piece` returns the next piece of the line and whether it ended the line.
    """
    digest, size = hashlib.sha256(), 0
    pending = start
    blank = json_blank(start)
    while not ended:
        piece, ended = read_piece()
        if not piece:  # the end of the file
            break
        if blank:  # checked until the first other byte: no copy of a blank piece
            blank = json_blank(piece)
        digest.update(pending[:-1])  # the last byte held back: it may be the CR of a CRLF
        size += len(pending) - 1
        pending = pending[-1:] + piece
    for ending in (b"\r\n", b"\n", b"\r"):
        if pending.endswith(ending):
            pending = pending[: -len(ending)]
            break
    digest.update(pending)
    return LongLine(start[:limit], size + len(pending), digest.hexdigest(), blank=blank)


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class _Prefix:
    """The first `size` bytes of a file, read a line at a time: what was in it when it
    was measured, whatever is written to it after."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self.handle, self.left = handle, size

    def readline(self, size: int = -1, /) -> bytes:
        if self.left <= 0:
            return b""
        got = self.handle.readline(self.left if size < 0 else min(size, self.left))
        self.left -= len(got)
        return got


def binary_lines(
    handle: IO[bytes], limit: int = MAX_LINE_BYTES, *, end: int | None = None
) -> Iterator[tuple[int, bytes | LongLine]]:
    """Every line of a binary file (numbered from 1, its ending kept), or a `LongLine`;
    with `end`, of its first `end` bytes only (a file still being written to)."""
    source: _Lines = handle if end is None else _Prefix(handle, end)

    def piece() -> tuple[bytes, bool]:
        got = source.readline(CHUNK)
        return got, len(got) < CHUNK or got.endswith(b"\n")

    number = 0
    while line := source.readline(first_read(limit)):
        number += 1
        if too_long(line, limit):
            yield number, rest_of_line(piece, line, line.endswith(b"\n"), limit)
        else:
            yield number, line
