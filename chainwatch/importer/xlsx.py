"""XLSX workbooks that a hostile or broken file cannot turn into a hang, a memory blow-up
or a crash.

openpyxl's read-only mode trusts the file in three ways we cannot afford:

- it loads the shared strings, styles and workbook parts whole, so a zip bomb
  (a few hundred KB that inflate to millions of `<si>` entries) takes gigabytes;
  `check_archive` refuses such a file from the zip directory alone, before
  anything is inflated (Python's zipfile never inflates past a member's
  declared size, so the declared sizes are a bound);
- its rows stop at the sheet's declared `<dimension>` (stale in many exports:
  later rows would be dropped) and pad every gap up to it with empty rows as
  wide as it (`A1:XFD1048576` means a million rows of 16,384 cells);
  `SheetReader` walks the `<row>` elements that are in the XML instead, cuts
  every row at the header's width and reports progress in bytes of sheet XML;
- a cell it cannot convert (`<v>nan</v>` in a number cell) or malformed XML
  ends its iterator with an arbitrary exception; here a bad cell makes its row
  a bad row, and broken XML a one-line `ImportFailed` saying how far it got;
- with `data_only` a formula whose result was never saved reads as an empty
  cell (a field would vanish unseen), and a number cell of thousands of digits
  fails Python's int() limit; here the first makes its row a bad row and the
  second is read as the float it is in Excel, which the mapper reports as out
  of range;
- it parses the parts it loads at open (workbook, shared strings, styles, and
  each sheet up to its dimension: through to its end without one, which
  `open_book` skips) with the standard library's parser, which
  expands an entity declared in the part up to expat's amplification limit
  (~100 times the part: gigabytes of strings from a part of tens of MB) and
  reads an external entity as nothing (an empty cell, unseen). With defusedxml
  installed (a dependency) openpyxl parses through it, which refuses any entity
  declaration; `open_book` says so in one line, and refuses to run without it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import sys
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from chainwatch.importer.blank import blank_cell
from chainwatch.importer.errors import FileBroken, ImportFailed, one_line
from chainwatch.importer.sheet_xml import row_elements
from chainwatch.importer.xstring import LoneSurrogate, decode_xstring
from chainwatch.long_lines import MAX_LINE_BYTES
from schemas.text import shorten

#: More zip members than any workbook Excel writes (one per sheet, style, drawing...).
MAX_MEMBERS: Final = 10_000
#: One member, inflated (a worksheet of a million rows of a dozen columns is ~200 MB).
MAX_MEMBER_BYTES: Final = 2 << 30
#: The shared strings, inflated: openpyxl keeps them all in memory (~10 bytes of RAM per byte).
MAX_SHARED_STRINGS_BYTES: Final = 100 << 20
#: Any other part loaded whole (workbook, styles, relations), inflated.
MAX_WHOLE_PART_BYTES: Final = 32 << 20
#: Inflated / compressed, for members above `RATIO_FLOOR` bytes; real sheets reach ~30.
MAX_RATIO: Final = 100
RATIO_FLOOR: Final = 1 << 20

#: The XML of one `<row>`, as a CSV record's bound: no record can be that large.
MAX_ROW_BYTES: Final = MAX_LINE_BYTES

#: The last row of a sheet (Excel's limit, and the largest `<row r>` the import reads).
MAX_SHEET_ROW: Final = 1_048_576

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_ROW: Final = _MAIN + "row"
_VALUE: Final = _MAIN + "v"
_FORMULA: Final = _MAIN + "f"
_STRING: Final = _MAIN + "si"
#: The cell types (`<c t>`) of the file format (ECMA-376 ST_CellType); no `t` is a number.
_CELL_TYPES: Final = frozenset({None, "n", "s", "str", "b", "e", "inlineStr", "d"})
#: A cell reference (`B7`) as openpyxl reads it; the row part may be missing here.
_REFERENCE: Final = re.compile(r"([A-Za-z]{1,3})([0-9]*)")
_CELL_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError)
#: The step openpyxl names when a part fails ("could not read strings from ...").
_STEP: Final = re.compile(r"could not read (\w+) from")
_PARTS: Final = {
    "manifest": "its content types part ([Content_Types].xml)",
    "strings": "its shared strings part",
    "workbook": "its workbook part (or its relations)",
    "worksheets": "its workbook's relations (or a chart sheet)",  # sheets are not parsed here
    "properties": "its document properties part",
    "stylesheet": "its styles part",
}
#: What reading the sheet's zip stream or XML raises for a damaged file.
_STREAM_ERRORS = (SyntaxError, zipfile.BadZipFile, zlib.error, EOFError, OSError)


def check_archive(path: Path) -> None:
    """`ImportFailed` unless `path` is a zip whose members inflate to sane sizes."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ImportFailed(f"{path}: not a readable XLSX workbook ({one_line(exc)})") from None
    if len(members) > MAX_MEMBERS:
        raise ImportFailed(f"{path}: {len(members)} parts in the workbook (at most {MAX_MEMBERS})")
    for info in members:
        name, size = info.filename, info.file_size
        limit = MAX_MEMBER_BYTES
        if name.lower().endswith("sharedstrings.xml"):
            limit = MAX_SHARED_STRINGS_BYTES
        elif not name.startswith("xl/worksheets/") and name.endswith((".xml", ".rels")):
            limit = MAX_WHOLE_PART_BYTES
        ratio = size / max(info.compress_size, 1)
        if size > limit or (size > RATIO_FLOOR and ratio > MAX_RATIO):
            raise ImportFailed(
                f"{path}: refused as a zip bomb: {name} inflates to {size:,} bytes "
                f"({ratio:.0f} times its compressed size; limits {limit:,} bytes and "
                f"{MAX_RATIO} times)"
            )


def open_book(path: Path) -> Any:
    """The workbook in read-only mode, or `ImportFailed` for any file openpyxl cannot open."""
    import openpyxl

    if not openpyxl.DEFUSEDXML:  # OPENPYXL_DEFUSEDXML=False, or defusedxml uninstalled
        raise ImportFailed(
            f"{path}: not read: openpyxl would parse it without defusedxml, expanding any XML "
            "entity the file declares (install defusedxml; unset OPENPYXL_DEFUSEDXML)"
        )
    check_archive(path)
    reader = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles it ignores
            # load_workbook's two steps, to close the file when a part fails (it did not)
            # no links: openpyxl parses another workbook's cached cells from each (~20
            # times the part in memory, kept for the whole import), which no row uses
            reader = _reader_type()(path, read_only=True, data_only=True, keep_links=False)
            reader.read()
            return reader.wb
    except Exception as exc:  # any failure here means the file is unreadable
        if reader is not None:  # a part openpyxl left open keeps the zip's file open
            handle = reader.archive.fp
            reader.archive.close()
            if handle is not None:
                handle.close()
        raise ImportFailed(f"{path}: not a readable XLSX workbook ({_why(exc)})") from None


@functools.cache
def _reader_type() -> type[Any]:
    """openpyxl's `ExcelReader`, whose read-only sheets do not read their size at open.

    openpyxl parses each sheet of the workbook up to its `<dimension>` when it opens
    it, and through the whole sheet when there is none (many writers leave it out):
    every row kept as an empty element, ~80 MB and half a minute for a million rows,
    a `<v>` of hundreds of MB held whole, before `SheetReader` bounds anything. The
    import reads the rows itself and never asks a sheet its size.
    """
    from openpyxl.reader.excel import SHARED_STRINGS, ExcelReader
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    class UnsizedSheet(ReadOnlyWorksheet):  # type: ignore[misc]  # openpyxl is untyped
        def _get_size(self) -> None:
            pass

    class Reader(ExcelReader):  # type: ignore[misc]
        def read_strings(self) -> None:
            """`ExcelReader.read_strings`, the strings as written (`SheetReader` decodes them)."""
            part = self.package.find(SHARED_STRINGS)
            if part is not None:
                with self.archive.open(part.PartName[1:]) as source:
                    self.shared_strings = _shared_strings(source)

        def read_worksheets(self) -> None:
            """`ExcelReader.read_worksheets` in read-only mode, with `UnsizedSheet`s."""
            for sheet, rel in self.parser.find_sheets():
                if rel.target not in self.valid_files:
                    continue
                if "chartsheet" in rel.Type:
                    self.read_chartsheet(sheet, rel)
                    continue
                unsized = UnsizedSheet(self.wb, sheet.name, rel.target, self.shared_strings)
                unsized.sheet_state = sheet.state
                self.wb._sheets.append(unsized)

    return Reader


def _shared_strings(source: IO[bytes]) -> list[str]:
    """The shared strings' texts as written: openpyxl's `read_string_table` deletes every
    `x005F_` in them, which made an escaped `_x005F_x000B_` (the literal text) the
    `_x000B_` a vertical tab is written as, and cut `x005F_` out of any text."""
    from openpyxl.cell.text import Text
    from openpyxl.xml.functions import iterparse

    strings: list[str] = []
    for _, node in iterparse(source):
        if node.tag == _STRING:
            strings.append(Text.from_tree(node).content)
            node.clear()
    return strings


def _why(exc: Exception) -> str:
    """Why openpyxl could not open a workbook, in one line.

    openpyxl wraps a part's failure in three lines of its own ("could not read
    strings from ...", "most probably ... invalid XML") that push the cause out of
    the shortened message (and "see the exception", which the user never sees):
    the part, as the step that read it names it, and the cause; an entity
    declaration defusedxml refused is said as such.
    """
    from defusedxml import DefusedXmlException

    cause = exc.__cause__
    step = _STEP.search(str(exc))
    if cause is None or step is None:
        return one_line(exc)
    where = _PARTS.get(step[1], "a part")
    if not isinstance(cause, DefusedXmlException):
        return f"{where} cannot be read: {one_line(cause)}"
    return (
        f"{where} declares XML entities ({type(cause).__name__}), which no workbook has: "
        "they could expand without bound or name other files"
    )


@dataclass(frozen=True, slots=True)
class SheetRow:
    """One `<row>` of the sheet: its values by column (from A), or why it has none."""

    number: int
    values: list[Any]
    error: str | None = None
    error_type: str = "import_row"  # the `ErrorDetail.type` of `error`
    beyond: bool = False  # a non-empty cell right of the header's last column
    unsaved: tuple[int, ...] = ()  # columns holding a formula without a saved value
    failed: tuple[int, ...] = ()  # columns holding an error value (#DIV/0!), a date that is none
    #: column -> the cell's text, for a number JSON has no form for (infinite: `1e400`)
    texts: dict[int, str] = field(default_factory=dict)


class SheetReader:
    """The rows present in a sheet's XML, in file order; `done`/`total` are bytes of XML."""

    def __init__(self, path: Path, book: Any, sheet: Any) -> None:
        from openpyxl.worksheet._reader import WorkSheetParser

        self.path = path
        archive = book._archive
        self.total = archive.getinfo(sheet._worksheet_path).file_size
        self._source: IO[bytes] = archive.open(sheet._worksheet_path)
        self._cells = WorkSheetParser(
            self._source,
            sheet._shared_strings,
            data_only=True,
            epoch=book.epoch,
            date_formats=book._date_formats,
            timedelta_formats=book._timedelta_formats,
        )
        self.rows_read = 0  # every <row>, for progress
        self.data_rows = 0  # the rows below the header, for a message a user can check
        self.width: int | None = None  # the header's, once read: every later row is cut there
        self._last = 0
        self._parse_cell = self._cells.parse_cell
        self._cells.parse_cell = self._cell  # parse_row calls it for each <c>

    @property
    def done(self) -> int:
        try:
            return self._source.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self._source.close()

    def rows(self) -> Iterator[SheetRow]:
        """Every `<row>` element; `FileBroken` when the XML or the zip stream is damaged.

        Only the current row is kept in memory (`sheet_xml.row_elements`), and of a
        row no more than `MAX_ROW_BYTES` of XML: a larger one is a bad row, and the
        import goes on after it.
        """
        elements = row_elements(self._source, _ROW, MAX_ROW_BYTES)
        while True:
            try:
                element, whole = next(elements)
            except StopIteration:
                return
            except _STREAM_ERRORS as exc:
                raise FileBroken(
                    f"{self.path}: the sheet cannot be read after row {self._last} "
                    f"({one_line(exc)}); {self.data_rows} rows of this file were read before"
                ) from None
            yield self._row(element) if whole else self._too_long(element)

    def _too_long(self, element: Any) -> SheetRow:
        """A row past `MAX_ROW_BYTES` of XML: its first cells (those read by then) are
        kept for its dead letter, as a long CSV line's start is."""
        first = self._row(element)
        error = (
            f"the row is more than {MAX_ROW_BYTES:,} bytes of sheet XML (so many cells, "
            "or so long a one, that no record can hold it); its first cells are kept"
        )
        return SheetRow(first.number, first.values, error, error_type="import_row_too_long")

    def _count(self, number: int) -> None:
        self._last = number
        self.rows_read += 1
        self.data_rows += self.width is not None

    def _cell(self, element: Any) -> dict[str, Any]:
        """openpyxl's cell, marked `unsaved` for a formula whose result the file lacks.

        `data_only` would read such a cell as empty. An empty `<v/>` under
        `t="str"` is a saved empty text (Excel's `=""`); openpyxl itself writes
        every formula with an empty `<v/>` and no `t`. A number over int()'s
        digit limit is read as the float Excel holds (infinite past ~309
        digits), so it reaches the mapper as a number out of range.
        """
        value = element.find(_VALUE)
        text: str = "" if value is None else value.text or ""
        unsaved = element.find(_FORMULA) is not None and not (
            text or (value is not None and element.get("t") == "str")
        )
        limit = sys.get_int_max_str_digits()
        huge = 0 < limit < len(text) and element.get("t", "n") == "n"
        if huge:
            element.remove(value)
        before = self._cells.col_counter
        elsewhere = _other_row(element.get("r"), self._cells.row_counter)
        if elsewhere is not None:
            return self._unreadable_cell(element, before, elsewhere)
        bad = _misread(element.get("t"), text)
        if bad is not None:
            return self._unreadable_cell(element, before, bad)
        try:
            cell: dict[str, Any] = self._parse_cell(element)
        except _CELL_ERRORS as exc:
            return self._unreadable_cell(element, before, exc)
        if huge:
            cell["value"] = float(text)
        elif cell.get("data_type") == "s" and isinstance(cell["value"], str):
            try:  # shared, inline and formula text alike (openpyxl makes all three "s")
                cell["value"] = decode_xstring(cell["value"])
            except LoneSurrogate as exc:
                where = cell_name(cell["column"], self._cells.row_counter)
                return self._unreadable_cell(element, before, f"{where} holds {exc}")
        elif cell.get("data_type") == "e" and element.get("t") != "e":
            cell["value"] = _number(text)  # openpyxl's "#VALUE!" for a date it cannot make
        if isinstance(cell["value"], float) and not math.isfinite(cell["value"]):
            cell["text"] = text  # for its dead letter, which is JSON: no `Infinity`
        cell["unsaved"] = unsaved
        return cell

    def _unreadable_cell(self, element: Any, before: int, why: Exception | str) -> dict[str, Any]:
        """A cell openpyxl cannot convert: empty, with why, so the row's other cells are
        kept for its dead letter (they were all lost with the row before). `why`: an
        exception (the cell "cannot be read"), or what is wrong in a user's words."""
        from openpyxl.utils.cell import column_index_from_string

        column: int | None = None
        found = _REFERENCE.fullmatch(element.get("r") or "")
        if found is not None:  # openpyxl's coordinate_to_tuple("") raises UnboundLocalError
            with contextlib.suppress(*_CELL_ERRORS):
                column = column_index_from_string(found[1].upper())
        if column is None:  # no reference, or a bad one: the next column, as openpyxl counts
            column = before + 1
        self._cells.col_counter = column
        error = why
        if isinstance(why, Exception):
            error = f"{cell_name(column, self._cells.row_counter)} cannot be read ({one_line(why)})"
        return {"column": column, "value": None, "unsaved": False, "error": error}

    def _check_number(self, number: int) -> None:
        """`FileBroken` for a `<row r>` that is not a sheet row after the last one.

        Rows are numbered upwards from 1 to 1,048,576 (Excel writes them so, and
        refuses any other order); openpyxl takes any integer, so `r="0"`, `r="-5"`,
        a repeated or a decreasing number were reported as the row of a bad row.
        """
        if self._last < number <= MAX_SHEET_ROW:
            return
        raise FileBroken(
            f"{self.path}: the sheet's row after row {self._last} is numbered "
            f"{shorten(str(number), 20)} (rows "
            f"are numbered upwards, 1 to {MAX_SHEET_ROW:,}): the file is damaged; "
            f"{self.data_rows} rows of this file were read before"
        )

    def _row(self, element: Any) -> SheetRow:
        before = self._cells.row_counter
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a date serial out of range: "#VALUE!"
                number, cells = self._cells.parse_row(element)
        except _CELL_ERRORS as exc:
            number = self._cells.row_counter
            if number == before:  # its own `r` was unreadable
                number = self._cells.row_counter = before + 1
            self._check_number(number)
            self._count(number)
            return SheetRow(number, [], f"the row cannot be read ({one_line(exc)})")
        self._check_number(number)
        self._count(number)
        widest = max((cell["column"] for cell in cells), default=0)
        width = widest if self.width is None else min(widest, self.width)
        values: list[Any] = [None] * width
        beyond = False
        unsaved: list[int] = []
        failed: list[int] = []
        texts: dict[int, str] = {}
        errors = [cell["error"] for cell in cells if "error" in cell]
        seen: set[int] = set()
        for cell in cells:
            column, value = cell["column"], cell["value"]
            if column in seen:  # one of two values would be taken unseen (Excel repairs it)
                errors.append(f"{cell_name(column, number)} appears twice in the row")
            seen.add(column)
            if column <= width:
                values[column - 1] = value
                if "text" in cell:
                    texts[column] = cell["text"]
                if cell["unsaved"]:
                    unsaved.append(column)
                elif cell.get("data_type") == "e":
                    failed.append(column)
            elif not blank_cell(value):
                beyond = True
        error = None
        if errors:
            error = errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        return SheetRow(
            number,
            values,
            error,
            beyond=beyond,
            unsaved=tuple(unsaved),
            failed=tuple(failed),
            texts=texts,
        )


def cell_name(column: int, row: int) -> str:
    """A cell as a user finds it: `B7`."""
    from openpyxl.utils.cell import get_column_letter

    try:
        return f"cell {get_column_letter(column)}{row}"
    except ValueError:  # past column XFD
        return f"the cell in column {column:,} of row {row}"


def _other_row(reference: str | None, row: int) -> str | None:
    """Why a cell's reference does not place it in the row it sits in, or None.

    openpyxl takes the column of `r` and ignores its row: `B5` (or `A0`) inside
    `<row r="2">` was read as cell B2 of row 2; a reference without a row (`B`)
    made openpyxl's int() fail, an unreadable cell in whatever column came next.
    A reference openpyxl cannot read otherwise is left to it (as before).
    """
    found = _REFERENCE.fullmatch(reference or "")
    if found is None:
        return None
    shown = shorten(found[0], 20)
    if not found[2]:
        return f"cell reference {shown!r} in row {row} names no row (the file is damaged)"
    if found[2].lstrip("0") != str(row):
        return f"cell reference {shown!r} in row {row} names another row (the file is damaged)"
    return None


def _misread(kind: str | None, text: str) -> Exception | None:
    """Why openpyxl would read a cell's `<v>` as another value than the file holds, unseen.

    A shared-string index `-1`: Python's list takes it from the end, another cell's text.
    A boolean (`t="b"`) other than 0 or 1: openpyxl takes any integer (`bool(int(v))`),
    so `2` or `-1` became "true". A boolean cell without a value (`<c t="b"/>`, a
    styled empty cell) is empty, as openpyxl reads it. A type the format does not
    have (`t="zz"`): openpyxl read its `<v>` as text.
    """
    if kind not in _CELL_TYPES:
        return ValueError(f"unknown cell type {shorten(str(kind), 20)!r}")
    if kind == "s" and text.lstrip().startswith("-") and _negative(text):  # most cells: no int()
        return IndexError(f"shared string index {text.strip()[:20]} is negative")
    if kind == "b" and text and text.strip() not in ("0", "1"):
        return ValueError(f"boolean {text.strip()[:20]!r} is neither 0 nor 1")
    return None


def _number(text: str) -> int | float:
    """The number of a cell openpyxl turned into `#VALUE!`: one in a date format that
    no date has (10,000,000 is past 9999-12-31). It stays a failed cell (the row is
    refused if the import reads it), but it is that number, not an error value."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _negative(text: str) -> bool:
    """Whether a cell's `<v>` is a negative integer (`-1`)."""
    try:
        return int(text) < 0
    except ValueError:
        return False
