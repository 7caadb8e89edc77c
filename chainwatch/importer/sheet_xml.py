"""The `<row>` elements of a sheet's XML, each held in bounded memory.

`iterparse` builds a whole row before anyone sees it: a row of millions of cells,
or one cell of a gigabyte of text, was held whole (the only bound was the sheet's
2 GB). Here expat is fed in chunks and only the elements inside a row are built;
a row that grows past `max_bytes` of XML is handed over as it stands (its finished
cells) and marked too long, and the same parser reads on through the rest of it
building nothing, up to the end tag that closes it. So at most `max_bytes` and a
chunk of a row are held, and the rows after it are read.

The rest of a long row used to be searched for its end tag as bytes: a `</row>` in
a comment, a CDATA section or an attribute value was taken for its end (the XML
then broke, stopping the import), and a UTF-16 sheet's end tag was never found.
The parser that knows where the row ends is the one that read its start.

A document type declaration is refused before anything is read: no workbook has
one (OPC forbids DTDs in a package's parts), and its entities are the two classic
attacks, an expansion without bound ("billion laughs") and an external entity naming
a file. Expat (>= 2.4, which every supported Python has) stops the first at its
amplification limit and never fetches the second, reading it as nothing: an empty
cell, unseen. This parser is not openpyxl's, so defusedxml (through which openpyxl
parses the other parts) does not guard it; refusing the declaration does what
defusedxml does, with one reason for both, whatever expat's version.

Expat hands text over in pieces, but holds a comment, a tag or a processing
instruction whole until it ends, and scans it again at every chunk (minutes for
tens of MiB). More than `MAX_QUIET_BYTES` fed past the end of the last thing expat
read (such a token) is broken XML, as no sheet writes one. Text outside a row is
read past, never kept.

Expat also holds every open element (~130 bytes each), built or not: a skipped row
or the XML outside rows nested a million deep held 130 MB, and a sheet's 2 GB of
`<a>` would hold ~80 GB. Nesting deeper than `MAX_DEPTH` is refused: no sheet nests
deeper than a dozen.
"""

from __future__ import annotations

import pyexpat
from collections.abc import Iterator
from typing import IO, Any, Final
from xml.etree.ElementTree import Element, ParseError

#: Bytes fed to the parser at a time (`iterparse` reads 16 KiB).
FEED: Final = 64 << 10
#: The XML without anything the parser reports (a comment, a tag...) that is
#: refused: as a row's bound, far above what any sheet writes.
MAX_QUIET_BYTES: Final = 1 << 20
#: The elements open at once that are refused (libxml2's default bound).
MAX_DEPTH: Final = 256
#: The names made that are kept (ours and pyexpat's, ~250 bytes a name, for the whole
#: file by default): a sheet naming its elements `<n1/><n2/>...` held them all.
_KEPT_NAMES: Final = 1 << 12


def row_elements(source: IO[bytes], row_tag: str, max_bytes: int) -> Iterator[tuple[Element, bool]]:
    """(row element, whole) for every outermost `row_tag` element, in file order.

    `whole` is False for a row that passed `max_bytes` of XML: the element holds
    only the cells finished by then. Elements outside a row are not built, and of
    those inside one, no tail text is kept (nothing reads it). Errors of the XML
    (`SyntaxError`) and of `source` propagate.
    """
    return _Rows(source, row_tag, max_bytes).read()


class _Names(dict[str, str]):
    """Expat's `namespace}local` as ElementTree's `{namespace}local`, made once per name."""

    def __missing__(self, name: str) -> str:
        fixed = self[name] = "{" + name if "}" in name else name
        return fixed


class _Rows:
    """One pass over a sheet's XML: the parser and the row open in it."""

    def __init__(self, source: IO[bytes], row_tag: str, max_bytes: int) -> None:
        self.source, self.row_tag, self.max_bytes = source, row_tag, max_bytes
        self.names = _Names()
        self.interned: dict[str, str] = {}  # pyexpat's, one string per name it reports
        self.parser = pyexpat.ParserCreate(namespace_separator="}", intern=self.interned)
        self.parser.buffer_text = True
        self.parser.buffer_size = FEED  # a long text arrives in pieces of at most this
        self._handlers(self._start, self._end, self._text)
        self.parser.StartDoctypeDeclHandler = _refuse_doctype
        self.stack: list[Element] = []  # the open elements of the row being read
        self.finished: list[Element] = []  # rows ended in the chunk fed last
        self.skipping = False  # reading past the rest of a row over the bound
        self.row_at = 0  # the byte the open row starts at
        self.fed = 0  # bytes given to the parser
        self.depth = 0  # the elements open, in a row or not

    def read(self) -> Iterator[tuple[Element, bool]]:
        while True:
            chunk = self.source.read(FEED)
            broken = self._parse(chunk)
            self.fed += len(chunk)
            rows, self.finished = self.finished, []
            for row in rows:  # those before a break too, as the rows of any broken file
                yield row, True
            if broken is not None:
                raise broken
            if not chunk:
                return
            if len(self.names) + len(self.interned) > _KEPT_NAMES:  # a sheet uses dozens
                self.names.clear()
                self.interned.clear()
            # expat holds a token whole until it ends, and rescans it per feed
            if self.fed - self.parser.CurrentByteIndex > MAX_QUIET_BYTES:
                raise SyntaxError(
                    f"more than {MAX_QUIET_BYTES:,} bytes of the sheet's XML without an "
                    "element or text (a comment, a tag or a processing instruction that long)"
                )
            if self.stack and self.fed - self.row_at > self.max_bytes:
                yield self._cut(), False

    def _parse(self, chunk: bytes) -> SyntaxError | None:
        """Feeds `chunk` (none: the end); the XML's error, for after the rows it ended."""
        if not chunk and (self.stack or self.skipping):
            local = self.row_tag.rpartition("}")[2]
            return SyntaxError(f"the sheet ends inside the row (</{local}> missing)")
        try:
            self.parser.Parse(chunk, not chunk)
        except pyexpat.ExpatError as exc:
            return ParseError(str(exc))
        except SyntaxError as exc:  # a handler's
            return exc
        return None

    def _cut(self) -> Element:
        """The open row, without the cell being read when the bound was passed; the
        parser reads past the rest of it, up to the first end of a row: a row nested
        in it (no sheet has one) ends the skip, and the rest of the outer row, outside
        any row then, is read past as well."""
        row = self.stack[0]
        if len(self.stack) > 1:
            del row[-1]
        self.stack, self.skipping = [], True
        self._handlers(self._deeper, self._skip_end, None)  # nothing made for each element
        return row

    def _handlers(self, start: Any, end: Any, text: Any) -> None:
        self.parser.StartElementHandler = start
        self.parser.EndElementHandler = end
        self.parser.CharacterDataHandler = text

    def _deeper(self, *_: object) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SyntaxError(f"the sheet's XML has elements nested more than {MAX_DEPTH} deep")

    def _skip_end(self, tag: str) -> None:
        self.depth -= 1
        if self.names[tag] == self.row_tag:
            self.skipping = False
            self._handlers(self._start, self._end, self._text)

    def _start(self, tag: str, attributes: dict[str, str]) -> None:
        self._deeper()
        name = self.names[tag]
        if not self.stack:
            if name != self.row_tag:
                return
            self.row_at = self.parser.CurrentByteIndex
        names = self.names
        element = Element(name, {names[key]: value for key, value in attributes.items()})
        if self.stack:
            self.stack[-1].append(element)
        self.stack.append(element)

    def _end(self, _tag: str) -> None:
        self.depth -= 1
        if self.stack:
            element = self.stack.pop()
            if not self.stack:
                self.finished.append(element)

    def _text(self, text: str) -> None:
        if self.stack and not len(self.stack[-1]):  # a tail (after a child) is not kept
            element = self.stack[-1]
            element.text = text if element.text is None else element.text + text


def _refuse_doctype(name: str, *_: object) -> None:
    raise SyntaxError(
        f"the sheet declares a document type (<!DOCTYPE {name[:40]}>), which no workbook "
        "has: its entities could expand without bound or name other files"
    )
