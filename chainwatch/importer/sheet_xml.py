"""The `<row>` elements of a sheet's XML, each held in bounded memory.

`iterparse` builds a whole row before anyone sees it: a row of millions of cells,
or one cell of a gigabyte of text, was held whole (the only bound was the sheet's
2 GB). Here the parser is fed in chunks, and a row that grows past `max_bytes` of
XML is handed over as it stands (its finished cells) and marked too long; the rest
of it is read past as bytes, up to its end tag, and parsing goes on after it with
a new parser, opened as the old one was (the ancestors' tags and namespaces). So
at most `max_bytes` and two chunks of a row are held, and the rows after it are read.

The end tag is found in the bytes, not by the parser: a `</row>` inside a comment
or CDATA of the skipped row would be taken for its end, and what follows would
most likely break the XML, which stops the import in one line (as any broken XML).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from typing import IO, Any, Final, Literal
from xml.etree.ElementTree import XMLPullParser

#: Bytes fed to the parser at a time (`iterparse` reads 16 KiB).
FEED: Final = 64 << 10
_BLANK: Final = re.compile(rb"[ \t\r\n]*")
_EVENTS: Final[tuple[Literal["start", "end", "start-ns"], ...]] = ("start", "end", "start-ns")


def row_elements(source: IO[bytes], row_tag: str, max_bytes: int) -> Iterator[tuple[Any, bool]]:
    """(row element, whole) for every outermost `row_tag` element, in file order.

    `whole` is False for a row that passed `max_bytes` of XML: the element holds
    only the cells finished by then. Every finished element outside a row is dropped
    from its parent as it ends. Errors of the XML (`SyntaxError`) and of `source`
    propagate.
    """
    return _Rows(source, row_tag, max_bytes).read()


class _Rows:
    """One pass over a sheet's XML: the parser and the elements open in it."""

    def __init__(self, source: IO[bytes], row_tag: str, max_bytes: int) -> None:
        self.source, self.row_tag, self.max_bytes = source, row_tag, max_bytes
        self.parser = _parser()
        self.stack: list[Any] = []
        self.spaces: dict[str, str] = {}  # prefix -> namespace, as declared
        self.in_row = 0
        self.fed = 0  # bytes given to the parser since the outermost row's start

    def read(self) -> Iterator[tuple[Any, bool]]:
        while True:
            chunk = self.source.read(FEED)
            if chunk:
                self.parser.feed(chunk)
            else:
                self.parser.close()
            yield from self._events(len(chunk))
            if not chunk:
                return
            if self.in_row:
                self.fed += len(chunk)
            if self.in_row and self.fed > self.max_bytes:
                yield self._cut(), False
                self._skip_row(chunk)

    def _events(self, fed: int) -> Iterator[tuple[Any, bool]]:
        """The rows the parser finished; `fed`: the bytes it was given last."""
        for event, item in self.parser.read_events():
            if event == "start-ns":
                self.spaces[item[0]] = item[1]
            elif event == "start":
                self.stack.append(item)
                if item.tag == self.row_tag:
                    if not self.in_row:  # a row nested in it is of its bytes: no new count
                        self.fed = -fed  # counted from the next chunk: never too early
                    self.in_row += 1
            else:
                self.stack.pop()
                if item.tag == self.row_tag:
                    self.in_row -= 1
                    if self.in_row == 0:
                        yield item, True
                if self.in_row == 0 and self.stack:
                    del self.stack[-1][-1]  # a finished element is its parent's last child

    def _cut(self) -> Any:
        """The outermost open row, without the cell being read when the bound was passed."""
        at = self._row_at()
        row = self.stack[at]
        if at + 1 < len(self.stack):
            row.remove(self.stack[at + 1])
        return row

    def _row_at(self) -> int:
        return next(i for i, e in enumerate(self.stack) if e.tag == self.row_tag)

    def _skip_row(self, chunk: bytes) -> None:
        """Read past the open row's end tag in bytes; a new parser goes on after it."""
        closing = b"</" + _qname(self.row_tag, self.spaces).encode()
        rest = _past_end_tag(self.source, closing, _tail(chunk, closing))
        if rest is None:  # the file ends inside the row: broken XML
            raise SyntaxError(f"the sheet ends inside the row ({closing.decode()}> missing)")
        self.parser, self.stack = _reopen(self.stack[: self._row_at()], self.spaces)
        self.in_row = 0
        self.parser.feed(rest)


def _parser() -> Any:
    """An `XMLPullParser`; defusedxml's parser inside when it is installed, as openpyxl's
    `iterparse` would use."""
    try:
        defused = importlib.import_module("defusedxml.ElementTree")
    except ImportError:
        return XMLPullParser(events=_EVENTS)
    return XMLPullParser(events=_EVENTS, _parser=defused.DefusedXMLParser())


def _qname(tag: str, spaces: dict[str, str]) -> str:
    """`{namespace}row` as the file wrote it: `row`, or `x:row` for a prefix."""
    if not tag.startswith("{"):
        return tag
    namespace, local = tag[1:].split("}", 1)
    prefixes = [p for p, n in spaces.items() if n == namespace]
    if not prefixes or "" in prefixes:
        return local
    return f"{prefixes[-1]}:{local}"


def _tail(chunk: bytes, closing: bytes) -> bytes:
    """What of the last chunk fed may be the start of the row's end tag (`</ro`, or
    `</row` and blanks): the parser has it, but had not read the tag whole."""
    start = chunk.rfind(b"<")
    if start == -1:
        return b""
    tail = chunk[start:]
    if closing.startswith(tail):
        return tail
    if tail.startswith(closing) and _BLANK.fullmatch(tail, len(closing)):
        return tail
    return b""


def _past_end_tag(source: IO[bytes], closing: bytes, buffer: bytes) -> bytes | None:
    """The bytes after the end tag `closing` + blanks + `>`, read on from `source` in
    chunks (never more than a chunk held); None when the file ends first."""
    end = re.compile(re.escape(closing) + rb"[ \t\r\n]*>")
    while True:
        found = end.search(buffer)
        if found is not None:
            return buffer[found.end() :]
        start = buffer.rfind(closing)
        if start != -1 and _BLANK.fullmatch(buffer, start + len(closing)):
            buffer = closing  # `</row` and blanks so far: only the blanks are dropped
        else:
            buffer = buffer[-(len(closing) - 1) :]  # perhaps the start of `</row`
        chunk = source.read(FEED)
        if not chunk:
            return None
        buffer += chunk


def _reopen(ancestors: list[Any], spaces: dict[str, str]) -> tuple[Any, list[Any]]:
    """A new parser inside elements named as `ancestors` (`<worksheet><sheetData>`),
    with the namespaces declared so far; and its elements for them (the new stack)."""
    declared = " ".join(
        f'xmlns{":" + prefix if prefix else ""}="{_attribute(namespace)}"'
        for prefix, namespace in spaces.items()
    )
    opening = "".join(
        f"<{_qname(e.tag, spaces)}{' ' + declared if i == 0 and declared else ''}>"
        for i, e in enumerate(ancestors)
    )
    parser = _parser()
    parser.feed(opening.encode())
    stack = [item for event, item in parser.read_events() if event == "start"]
    return parser, stack


def _attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
