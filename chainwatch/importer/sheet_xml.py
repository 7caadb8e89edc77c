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
    parser = _parser()
    stack: list[Any] = []
    spaces: dict[str, str] = {}  # prefix -> namespace, as declared
    in_row = fed = 0  # fed: bytes given to the parser since the row's start
    while True:
        chunk = source.read(FEED)
        if chunk:
            parser.feed(chunk)
        else:
            parser.close()
        for event, item in parser.read_events():
            if event == "start-ns":
                spaces[item[0]] = item[1]
            elif event == "start":
                stack.append(item)
                if item.tag == row_tag:
                    in_row += 1
                    fed = -len(chunk)  # counted from the next chunk: never a row too early
            else:
                stack.pop()
                if item.tag == row_tag:
                    in_row -= 1
                    if in_row == 0:
                        yield item, True
                if in_row == 0 and stack:
                    del stack[-1][-1]  # a finished element is its parent's last child
        if not chunk:
            return
        if in_row:
            fed += len(chunk)
        if in_row and fed > max_bytes:
            at = next(i for i, e in enumerate(stack) if e.tag == row_tag)
            row = stack[at]
            if at + 1 < len(stack):  # the cell being read when the bound was passed
                row.remove(stack[at + 1])
            yield row, False
            closing = b"</" + _qname(row_tag, spaces).encode()
            rest = _past_end_tag(source, closing, _tail(chunk, closing))
            if rest is None:  # the file ends inside the row: broken XML
                raise SyntaxError(f"the sheet ends inside the row ({closing.decode()}> missing)")
            parser, stack = _reopen(stack[:at], spaces)
            in_row = 0
            parser.feed(rest)


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
