"""The lines of a CSV file handed to `csv.reader`, each record bounded in size.

A CSV record may span many lines (a quoted field holding line breaks), so the
line bound of `chainwatch.long_lines` alone did not bound a record: one of 100
MB in 1,000 quoted fields took 450 MB of memory and became a dead letter of
100 MB. And when `csv.reader` gave up inside a record (a field over its 128 KB
limit), the record's later lines were read as records of their own: a million
rejected rows for one bad note, and a line of it that looked like a row would
have been imported.

`RecordTap` feeds the reader line by line and keeps the text of the record
being read (its dead letter's `raw`). A record over `MAX_RECORD_BYTES`, or one
the reader refused, is read to its end by `RecordEnd`, which follows the quotes
as `csv.reader` does, through SHA-256 without being held: the reader starts
afresh on the next record, whatever the bad one held.
"""

from __future__ import annotations

import codecs
import re
from typing import IO, Final

from chainwatch.long_lines import CHUNK, MAX_LINE_BYTES, LongLine, first_read, rest_of_line

#: The largest CSV record (all its lines) an import holds: as large as a line may be
#: (no record can be larger: Kafka's 1 MiB message limit).
MAX_RECORD_BYTES: Final = MAX_LINE_BYTES
_LINE_READ: Final = first_read()
_QUOTE: Final = '"'  # csv.reader's default, which the import uses

# csv.reader's states (CPython's _csv.c) that matter for where a record ends.
_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)


class RecordEnd:
    """Follows a record's text as `csv.reader` reads it, to find the line it ends on.

    The default dialect with a given delimiter: a quote opens a quoted field only
    at a field's start; in one, two quotes are a quote and a quote followed by
    anything else ends the quotes. A line ending outside quotes ends the record.
    """

    def __init__(self, delimiter: str) -> None:
        self._delimiter = delimiter
        self._plain = re.compile(f"[{re.escape(delimiter)}\r\n]")
        self._state = _START

    def feed(self, text: str) -> bool:
        """Read the record's next text (whole lines, or pieces of one); True once it ended."""
        pos, size, state = 0, len(text), self._state
        while pos < size:
            if state == _QUOTED:
                found = text.find(_QUOTE, pos)
                if found < 0:
                    break
                state, pos = _QUOTE_IN_QUOTED, found + 1
                continue
            char = text[pos]
            if state == _QUOTE_IN_QUOTED and char == _QUOTE:
                state, pos = _QUOTED, pos + 1
            elif char in "\r\n":
                self._state = _START
                return True
            elif char == self._delimiter:
                state, pos = _START, pos + 1
            elif state == _START and char == _QUOTE:
                state, pos = _QUOTED, pos + 1
            else:  # unquoted text runs to the next delimiter or line ending
                state = _UNQUOTED
                found_plain = self._plain.search(text, pos + 1)
                pos = size if found_plain is None else found_plain.start()
        self._state = state
        return False

    @property
    def in_quotes(self) -> bool:
        """Whether the text read so far ends inside a quoted field."""
        return self._state == _QUOTED


class RecordTap:
    """The lines a csv.reader consumed since the last `take()`: a record's original text.

    A record growing past `MAX_RECORD_BYTES` (one long line, or many) is not
    handed on: it is read to its end (`RecordEnd`) and a `LongLine` goes through
    the reader instead (the reader starts afresh on its next call). `delimiter`
    must be set before the first record after the header.
    """

    def __init__(self, handle: IO[str], encoding: str) -> None:
        self._handle = handle
        self._encoder = codecs.getincrementalencoder(encoding)()
        self._encoder.encode("")  # a byte order mark, which is not in the line
        self._taken: list[str] = []
        self._size = 0
        self.lines = 0
        #: None while the lines above the first record are read (a title, the header):
        #: the csv reader reads each of them alone, so each is bounded as a line.
        self.delimiter: str | None = None
        self.at_end = False  # the file's end was read
        #: The record read through last (`LongLine`, `skip_rest`) ran to the file's end
        #: inside a quoted field: a quote never closed made the rest of the file its record.
        self.ran_out_in_quotes = False

    def __iter__(self) -> RecordTap:
        return self

    def __next__(self) -> str:
        line = self._handle.readline(_LINE_READ)
        if not line:
            self.at_end = True
            raise StopIteration
        self.lines += 1
        self._taken.append(line)
        self._size += len(line)
        ending = 2 if line.endswith("\r\n") else 1 if line.endswith(("\n", "\r")) else 0
        if self._size - ending > MAX_RECORD_BYTES:
            text = self.take()
            ends = RecordEnd(self.delimiter) if self.delimiter is not None else None
            raise self._read_through(
                text, ends, ended=ending > 0 if ends is None else ends.feed(text)
            )
        return line

    def skip_rest(self) -> LongLine | None:
        """After the reader refused the record: read it to its end, unless it ended.

        None when the record's text so far is all of it (`take()` returns it), else
        the whole record as a `LongLine` (its start kept, its size and hash).
        """
        text = "".join(self._taken)
        ends = RecordEnd(self.delimiter or ",")
        if not text or ends.feed(text):
            return None
        self.take()
        return self._read_through(text, ends, ended=False)

    def _read_through(self, text: str, ends: RecordEnd | None, *, ended: bool) -> LongLine:
        """The record `text` starts (a line, without `ends`), read to its end through
        SHA-256 (`rest_of_line`)."""

        line_start = [text.endswith(("\n", "\r"))]  # the line read last was counted

        def piece() -> tuple[bytes, bool]:
            got = self._handle.readline(CHUNK)
            if got and line_start[0]:
                self.lines += 1
            line_start[0] = got.endswith(("\n", "\r"))
            return self._encoder.encode(got), line_start[0] if ends is None else ends.feed(got)

        whole = rest_of_line(piece, self._encoder.encode(text), ended)
        self.ran_out_in_quotes = ends is not None and ends.in_quotes
        return whole

    def unclosed_quote(self, text: str) -> bool:
        """Whether `text`, the last record, ends in a quote never closed: the reader
        took every line after the quote into it (they are in no other row)."""
        if not self.at_end or '"' not in text or self.delimiter is None:
            return False
        ends = RecordEnd(self.delimiter)
        return not ends.feed(text) and ends.in_quotes

    def take(self) -> str:
        text = "".join(self._taken)
        self._taken.clear()
        self._size = 0
        return text
