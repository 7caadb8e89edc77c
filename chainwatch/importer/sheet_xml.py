"""The `<row>` elements of a sheet's XML, each held in bounded memory.

`iterparse` builds a whole row before anyone sees it: a row of millions of cells,
or one cell of a gigabyte of text, was held whole (the only bound was the sheet's
2 GB). Here the parser is fed in chunks, and a row that grows past `max_bytes` of
XML is handed over as it stands (its finished cells) and marked too long; the rest
of it is read past as bytes, up to its end tag, and parsing goes on after it with
a new parser, opened as the old one was (the ancestors' tags, each with the
namespaces it declared: a declaration elsewhere is not in scope there). So at most
`max_bytes` and two chunks of a row are held, and the rows after it are read.
Outside a row, more than `MAX_QUIET_BYTES` without an element (a comment, a start tag or
text that long: expat holds such a token whole and scans it again at every chunk,
minutes for tens of MiB) is broken XML, as no sheet writes one.

The parser does not tell which prefix a tag was written with: the row's end tag is
any name bound to its namespace where it is; an ancestor named by two (`xmlns` and
`xmlns:x` both the sheet's) cannot be reopened as the rest of the file closes it,
and is refused in one line.

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
_HEAD: Final = 1 << 10
#: The XML outside a row without an element (a comment, a start tag, text) that is
#: refused: as a row's bound, far above what any sheet writes.
MAX_QUIET_BYTES: Final = 1 << 20
#: The XML declaration (after a UTF-8 byte order mark), and the encoding it names.
_DECLARATION: Final = re.compile(rb"(?:\xef\xbb\xbf)?(<\?xml[^<>]*\?>)")
_ENCODING: Final = re.compile(rb"""encoding[ \t\r\n]*=[ \t\r\n]*["']([A-Za-z][\w.-]*)["']""")
#: `<`, or `</` and a name, then perhaps blanks: the start of an end tag, cut
_PARTIAL: Final = re.compile(rb"(<(?:/[^<>\s]{0,1024})?)([ \t\r\n]*)")
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
        #: per element of `stack`, the namespaces (prefix, namespace) it declares
        self.scopes: list[list[tuple[str, str]]] = []
        self.declared: list[tuple[str, str]] = []  # for the element that starts next
        self.pending = b""  # the end of the bytes fed that may start an end tag
        self.head = b""  # the file's first bytes, for its XML declaration
        self.in_row = 0
        self.fed = 0  # bytes given to the parser since the outermost row's start
        self.quiet = 0  # bytes given to it since its last event

    def read(self) -> Iterator[tuple[Any, bool]]:
        while True:
            chunk = self.source.read(FEED)
            if chunk:
                self.parser.feed(chunk)
                self.pending = _pending(self.pending, chunk)
                if len(self.head) < _HEAD:
                    self.head += chunk[: _HEAD - len(self.head)]
            else:
                self.parser.close()
            yield from self._events(len(chunk))
            if not chunk:
                return
            self.quiet += len(chunk)
            if self.in_row:
                self.fed += len(chunk)
            elif self.quiet > MAX_QUIET_BYTES:  # expat holds it whole, rescans it per feed
                raise SyntaxError(
                    f"more than {MAX_QUIET_BYTES:,} bytes of the sheet's XML outside a row "
                    "without an element (a comment, a start tag or text that long)"
                )
            if self.in_row and self.fed > self.max_bytes:
                yield self._cut(), False
                self._skip_row()

    def _events(self, fed: int) -> Iterator[tuple[Any, bool]]:
        """The rows the parser finished; `fed`: the bytes it was given last."""
        for event, item in self.parser.read_events():
            self.quiet = -fed  # counted from the next chunk, as `fed`
            if event == "start-ns":
                self.declared.append(item)
            elif event == "start":
                self.stack.append(item)
                self.scopes.append(self.declared)
                self.declared = []
                if item.tag == self.row_tag:
                    if not self.in_row:  # a row nested in it is of its bytes: no new count
                        self.fed = -fed  # counted from the next chunk: never too early
                    self.in_row += 1
            else:
                self.stack.pop()
                self.scopes.pop()
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

    def _skip_row(self) -> None:
        """Read past the open row's end tag in bytes; a new parser goes on after it."""
        at = self._row_at()
        names = _names(self.row_tag, self.scopes[: at + 1])
        end = re.compile(rb"</(?:%b)[ \t\r\n]*>" % b"|".join(re.escape(n) for n in names))
        rest = _past_end_tag(self.source, end, self.pending)
        if rest is None:  # the file ends inside the row: broken XML
            raise SyntaxError(f"the sheet ends inside the row (</{names[0].decode()}> missing)")
        self.parser, self.stack = _reopen(self.head, self.stack[:at], self.scopes[:at])
        self.scopes = self.scopes[:at]
        self.in_row = self.quiet = 0
        self.parser.feed(rest)
        self.pending = _pending(b"", rest)


def _parser() -> Any:
    """An `XMLPullParser`; defusedxml's parser inside when it is installed, as openpyxl's
    `iterparse` would use."""
    try:
        defused = importlib.import_module("defusedxml.ElementTree")
    except ImportError:
        return XMLPullParser(events=_EVENTS)
    return XMLPullParser(events=_EVENTS, _parser=defused.DefusedXMLParser())


def _names(tag: str, scopes: list[list[tuple[str, str]]]) -> list[bytes]:
    """The names the file may write `{namespace}row` by inside `scopes` (its element's
    and its ancestors' declarations): `row`, `x:row`, or both when both are bound."""
    if not tag.startswith("{"):
        return [tag.encode()]
    namespace, local = tag[1:].split("}", 1)
    bound = {prefix: space for declared in scopes for prefix, space in declared}
    names = [f"{p}:{local}" if p else local for p, space in bound.items() if space == namespace]
    return [name.encode() for name in names] or [local.encode()]


def _pending(before: bytes, chunk: bytes) -> bytes:
    """What at the end of `before` + `chunk` may be the start of an end tag (`</ro`,
    `</row` and blanks, as one blank): the parser has it but had not read a whole tag."""
    start = chunk.rfind(b"<")
    found = _PARTIAL.fullmatch(chunk[start:] if start != -1 else before + chunk)
    if found is None:
        return b""
    return found[1] + (b" " if found[2] else b"")


def _past_end_tag(source: IO[bytes], end: re.Pattern[bytes], carry: bytes) -> bytes | None:
    """The bytes after the first match of `end`, read on from `source` in chunks
    (never more than a chunk held); None when the file ends first."""
    while True:
        chunk = source.read(FEED)
        if not chunk:
            return None
        buffer = carry + chunk
        found = end.search(buffer)
        if found is not None:
            return buffer[found.end() :]
        carry = _pending(b"", buffer)


def _reopen(
    head: bytes, ancestors: list[Any], scopes: list[list[tuple[str, str]]]
) -> tuple[Any, list[Any]]:
    """A new parser inside elements named as `ancestors` (`<worksheet><sheetData>`),
    each declaring the namespaces it declared; and its elements for them (the new stack).
    The file's XML declaration (`head`) comes first: the bytes after the row are in
    its encoding (a Latin-1 `Ã©` read as UTF-8 was `é`).

    An ancestor's name is the one prefix bound to its namespace there: the rest of the
    file closes it, and the parser gives no prefix, so two bound to it are refused."""
    opening = []
    for i, element in enumerate(ancestors):
        names = _names(element.tag, scopes[: i + 1])
        if len(names) > 1:
            shown = " and ".join(repr(n.decode()) for n in names)
            raise SyntaxError(f"the sheet names {element.tag} as {shown}: cannot read on")
        declared = "".join(
            f' xmlns{":" + prefix if prefix else ""}="{_attribute(space)}"'
            for prefix, space in scopes[i]
        )
        opening.append(f"<{names[0].decode()}{declared}>")
    declaration = _DECLARATION.match(head)
    prolog = b"" if declaration is None else declaration[1]
    named = None if declaration is None else _ENCODING.search(prolog)
    try:
        tags = "".join(opening).encode(
            "utf-8" if named is None else named[1].decode(), "xmlcharrefreplace"
        )
    except LookupError:
        raise SyntaxError(f"unknown encoding in {prolog[:100]!r}") from None
    parser = _parser()
    parser.feed(prolog + tags)
    stack = [item for event, item in parser.read_events() if event == "start"]
    return parser, stack


def _attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
