"""Reading CSV, XLSX and NDJSON files as rows of cells, with row numbers a user can find.

A `Table` is opened (which checks what can be checked before any row is
used: the file exists, its format, its text encoding, the sheet, the header)
and then yields `Row`s in file order. Row numbers are what the user sees: the
line a CSV record or NDJSON line starts on, the sheet row of an XLSX cell.
Every row keeps its original form (`raw`) for the dead letter of a bad row.
Problems with the file as a whole raise `ImportFailed` (one line, no row is
used); problems with one row are returned with that row.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

from chainwatch.errors import UsageError
from chainwatch.importer.blank import blank_cell
from chainwatch.importer.csv_records import RecordTap
from chainwatch.importer.errors import ImportFailed
from chainwatch.importer.xlsx import SheetReader, SheetRow, cell_name, open_book
from chainwatch.long_lines import (
    CHUNK,
    MAX_LINE_BYTES,
    LongLine,
    binary_lines,
)
from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.files import not_a_file
from schemas.import_mapping import ImportMapping
from schemas.json_blank import json_blank
from schemas.json_keys import WRITE_ONCE, repeated_keys
from schemas.text import capped

Format = Literal["csv", "xlsx", "ndjson"]
FORMAT_BY_SUFFIX: Final[dict[str, Format]] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
_DELIMITERS = (";", ",", "\t", "|")

#: Rows read (blank ones too) between two progress reports from a table itself.
_TICK = 4096

__all__ = [
    "FORMAT_BY_SUFFIX",
    "MAX_LINE_BYTES",
    "Format",
    "ImportFailed",
    "Row",
    "Table",
    "given_format",
    "is_one_of",
    "open_table",
]


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a file: its cells by header (or NDJSON key), or why it has none."""

    number: int
    cells: dict[str, Any]
    raw: bytes
    problem: tuple[ReasonCode, ErrorDetail] | None = None
    #: (size, SHA-256) of the whole line when it was too long and `raw` is its start.
    whole: tuple[int, str] | None = None
    #: XLSX: header -> column (1 = A) of the cells holding a formula without a saved
    #: value; they read as empty, so a row whose import reads one is refused.
    unsaved: dict[str, int] = field(default_factory=dict)
    #: XLSX: no cell holds a value, but some hold a formula without one (`unsaved`):
    #: the row is blank only if the import reads none of them (the pipeline decides).
    blank: bool = False
    #: XLSX: header -> column of the cells holding an error value (`#DIV/0!`, `#N/A`,
    #: `#REF!`): openpyxl reads it as that text, which is no value of the row's; or a
    #: number in a date format that no date has (its value is that number).
    failed: dict[str, int] = field(default_factory=dict)
    #: NDJSON: the cells are JSON values whose types are kept (`RowMapper.map`).
    typed: bool = False


def error_value_problem(column: int, row: int, value: Any) -> tuple[ReasonCode, ErrorDetail]:
    """A cell holding a spreadsheet error (`#N/A`) in a column the import reads: it was
    imported as that text (a customer named "#N/A"). A number there is one in a date
    format that is no date (`SheetReader`): openpyxl calls it `#VALUE!`, but the file
    holds no error and no formula to fix."""
    where = cell_name(column, row)
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = capped(str(value), quoted=False, digits=True)
        return _unreadable(
            f"{where} cannot be read as a date: it holds the number {number} in a date "
            "format, outside the dates a sheet holds (format it as a number, or fix it)"
        )
    return _unreadable(
        f"{where} holds the error value {value} (fix the formula, or clear the cell)"
    )


def unsaved_problem(column: int, row: int) -> tuple[ReasonCode, ErrorDetail]:
    return _unreadable(
        f"{cell_name(column, row)} holds a formula without a saved value (open "
        "and save the file in Excel, or export values)"
    )


@dataclass
class Table:
    """An open file: `header` (None for NDJSON), `rows()` once, `done`/`total` for a bar."""

    path: Path
    format: Format
    header: list[str] | None = None
    total: int = 0
    done: int = 0
    #: Called now and then while rows are read, blank ones too (set by the pipeline).
    on_progress: Callable[[Table], None] | None = None
    _close: list[Any] = field(default_factory=list)
    identity: tuple[int, int] | None = None
    """(device, inode) of the file read: outputs must not be it (`is_one_of`)."""

    @property
    def name(self) -> str:
        return self.path.name

    def rows(self) -> Iterator[Row]:  # replaced per format by `open_table`
        raise NotImplementedError

    def tick(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self)

    def close(self) -> None:
        while self._close:
            self._close.pop().close()

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def given_format(given: str) -> Format:
    """`--format`'s value, checked before any file is opened (a usage error)."""
    if given not in ("csv", "xlsx", "ndjson"):
        raise UsageError(f"--format {given!r}: expected csv, xlsx or ndjson")
    return given  # type: ignore[return-value]


def detect_format(path: Path, given: str | None = None) -> Format:
    if given is not None:
        return given_format(given)
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise ImportFailed(f"{path}: the old .xls format is not read; save it as .xlsx or CSV")
    found = FORMAT_BY_SUFFIX.get(suffix)
    if found is None:
        raise UsageError(f"{path}: cannot tell the format from the name; pass --format")
    return found


def open_table(path: Path, mapping: ImportMapping, fmt: str | None = None) -> Table:
    """Open one file and read its header; `ImportFailed` for a file that cannot be read.

    A path that is no file is said to be one before its format is guessed from the
    name: a directory without an extension was told to "pass --format".
    """
    why = not_a_file(path)
    if why is not None:
        raise ImportFailed(f"{path}: {why}")
    kind = detect_format(path, fmt)
    table: Table
    try:
        if kind == "csv":
            table = _CsvTable.open(path, mapping)
        elif kind == "xlsx":
            table = _XlsxTable.open(path, mapping)
        else:
            table = _NdjsonTable.open(path)
    except OSError as exc:  # no permission, an I/O error: "internal error" before
        raise ImportFailed(f"{path}: cannot read it ({exc.strerror or exc})") from None
    table.identity = file_identity(path)
    return table


def file_identity(path: Path) -> tuple[int, int]:
    """(device, inode): the same for a file's every name, symlinks and hard links alike."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def is_one_of(path: Path, inputs: Collection[tuple[int, int]]) -> bool:
    """Whether `path` (an output about to be written) is one of the files being read.

    Writing there would truncate or replace an input before it is imported; the
    writers ask this before they open anything. The same file under another
    name (a symlink, a hard link) is the same (device, inode).
    """
    try:
        return file_identity(path) in inputs
    except OSError:  # not there yet (or unreadable): not an input
        return False


# --- CSV --------------------------------------------------------------------------------


def _long_problem(long: LongLine, lines: int = 1) -> tuple[ReasonCode, ErrorDetail]:
    """A line, or a CSV record of `lines` lines (quoted line breaks), too long to hold."""
    if lines > 1:
        message = long.describe(what=f"the record ({lines:,} lines)")
        return _unreadable(message, "import_record_too_long")
    return _unreadable(long.describe(), "import_line_too_long")


class _CsvTable(Table):
    @classmethod
    def open(cls, path: Path, mapping: ImportMapping) -> _CsvTable:
        encoding = mapping.csv.encoding
        lines = _check_encoding(path, encoding)
        handle = path.open(encoding=encoding, newline="")
        table = cls(path=path, format="csv", total=lines, _close=[handle])
        try:
            table._start(handle, mapping)
        except BaseException:
            table.close()
            raise
        return table

    def _start(self, handle: IO[str], mapping: ImportMapping) -> None:
        self._tap = RecordTap(handle, mapping.csv.encoding)
        for _ in range(mapping.header_row - 1):
            try:
                if next(self._tap, None) is None:
                    raise ImportFailed(f"{self.path}: no header row {mapping.header_row}")
            except LongLine:  # a line above the header, not read: as any other there
                continue
            self._tap.take()
        try:
            header_line = next(self._tap, None)
        except LongLine as long:
            raise ImportFailed(
                f"{self.path}: header row {mapping.header_row} is {long.size:,} bytes, "
                f"longer than a header can be ({MAX_LINE_BYTES:,})"
            ) from None
        if header_line is None:
            raise ImportFailed(f"{self.path}: the file is empty")
        delimiter = mapping.csv.delimiter or _delimiter(self.path, header_line)
        self._tap.take()
        self._tap.delimiter = delimiter
        self._reader = csv.reader(self._tap, delimiter=delimiter)
        try:
            parsed = next(csv.reader([header_line], delimiter=delimiter), [])
        except csv.Error as exc:  # a field over csv's limit (128 KB), a NUL byte
            raise ImportFailed(
                f"{self.path}: header row {mapping.header_row} cannot be read ({exc})"
            ) from None
        self.header = [h.strip() for h in parsed]
        if not any(self.header):
            raise ImportFailed(f"{self.path}: header row {mapping.header_row} is empty")

    def rows(self) -> Iterator[Row]:
        header = self.header or []
        while True:
            start = self._tap.lines + 1
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except LongLine as long:
                self.done = self._tap.lines
                why = self._unclosed(start) or _long_problem(long, self._tap.lines - start + 1)
                yield Row(start, {}, long.start, why, (long.size, long.sha256))
                continue
            except csv.Error as exc:  # a field over csv's 128 KB, an unterminated quote
                rest = self._tap.skip_rest()  # its later lines are no records of their own
                self.done = self._tap.lines
                if rest is None:
                    why = _unreadable(f"{exc} on {_lines(start, self._tap.lines)}")
                    yield Row(start, {}, self._tap.take().encode(), why)
                else:
                    why = self._unclosed(start) or _unreadable(
                        f"{exc} on {_lines(start, self._tap.lines)}"
                    )
                    yield Row(start, {}, rest.start, why, (rest.size, rest.sha256))
                continue
            self.done = self._tap.lines
            text = self._tap.take()
            if all(blank_cell(c) for c in cells):
                if self.done % _TICK == 0:
                    self.tick()
                continue
            row = dict(zip(header, cells, strict=False))
            extra = [c for c in cells[len(header) :] if not blank_cell(c)]
            problem = None
            if self._tap.unclosed_quote(text):  # else a rejection naming a field, or none
                problem = _unclosed_problem(start, self._tap.lines)
            elif extra:
                problem = _unreadable(
                    f"the row has {len(cells)} cells, the header {len(header)} columns "
                    "(a delimiter inside an unquoted value?)"
                )
            yield Row(start, row, text.rstrip("\r\n").encode(), problem)

    def _unclosed(self, start: int) -> tuple[ReasonCode, ErrorDetail] | None:
        """The unclosed quote's problem when the record read through last (too long, or
        refused by the reader: over its 128 KB field limit) ran to the file's end inside
        quotes: the quote, not the size, is what to fix."""
        return _unclosed_problem(start, self._tap.lines) if self._tap.ran_out_in_quotes else None


def _unclosed_problem(start: int, end: int) -> tuple[ReasonCode, ErrorDetail]:
    return _unreadable(
        f"a quote in this record is never closed, so lines {start}-{end} (the rest of the "
        "file) were read as this one record"
    )


def _lines(start: int, end: int) -> str:
    """Where a record is in the file: `line 7`, `lines 7-12`."""
    return f"line {start}" if end <= start else f"lines {start}-{end}"


def _check_encoding(path: Path, encoding: str) -> int:
    """Decode the whole file once (so a bad byte stops the import before any row
    is used) and count its lines for the progress bar."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines = offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                if offset == 0 and chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    # Excel's "Unicode Text": cp1252, the usual advice, reads it as NULs
                    raise ImportFailed(
                        f"{path}: UTF-16 text (it starts with UTF-16's byte order mark), "
                        f"not {encoding}; set csv.encoding: utf-16 in the mapping"
                    ) from None
                raise ImportFailed(
                    f"{path}: not {encoding} text (byte {offset + exc.start}); set "
                    "csv.encoding in the mapping, e.g. cp1252 for older Excel exports"
                ) from None
            except UnicodeError as exc:  # a codec that decodes nothing (`undefined`)
                raise ImportFailed(f"{path}: cannot decode as {encoding} ({exc})") from None
            lines += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ImportFailed(f"{path}: not {encoding} text (it ends mid-character)") from None
    return lines


def _delimiter(path: Path, header_line: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _unreadable(message: str, kind: str = "import_row") -> tuple[ReasonCode, ErrorDetail]:
    return ReasonCode.VALIDATION_FAILED, ErrorDetail(loc="", msg=message, type=kind)


# --- XLSX -------------------------------------------------------------------------------


class _XlsxTable(Table):
    """A sheet's rows as they are in its XML (see `xlsx`: bombs, stale dimensions, bad cells)."""

    @classmethod
    def open(cls, path: Path, mapping: ImportMapping) -> _XlsxTable:
        book = open_book(path)
        table = cls(path=path, format="xlsx", _close=[book])
        try:
            table._start(book, mapping)
        except BaseException:
            table.close()
            raise
        return table

    def _start(self, book: Any, mapping: ImportMapping) -> None:
        names = ", ".join(book.sheetnames[:20])
        if mapping.sheet is None and book.worksheets:
            sheet = book.worksheets[0]
        elif mapping.sheet is not None and mapping.sheet in book.sheetnames:
            sheet = book[mapping.sheet]
        else:
            raise ImportFailed(f"{self.path}: no sheet {mapping.sheet!r} (sheets: {names})")
        if not hasattr(sheet, "_worksheet_path"):
            raise ImportFailed(f"{self.path}: sheet {mapping.sheet!r} is a chart, not a table")
        self._reader = reader = SheetReader(self.path, book, sheet)
        self._close.append(reader)
        self.total = reader.total
        self._rows = reader.rows()
        first = mapping.header_row
        header: SheetRow | None = None
        for row in self._rows:
            if row.number >= first:
                header = row
                break
        if header is not None and header.number == first and header.error is not None:
            raise ImportFailed(f"{self.path}: header row {first}: {header.error}")
        if header is not None and header.number == first and header.unsaved:
            _, detail = unsaved_problem(min(header.unsaved), first)
            raise ImportFailed(f"{self.path}: header row {first}: {detail.msg}")
        if header is None or header.number != first:
            raise ImportFailed(f"{self.path}: header row {first} is empty")
        columns = ["" if h is None else str(h).strip() for h in header.values]
        while columns and not columns[-1]:
            columns.pop()
        if not columns:  # a name is cut of all whitespace (U+00A0 too), as a CSV header's
            raise ImportFailed(f"{self.path}: header row {first} is empty")
        self.header = columns
        reader.width = len(columns)

    def rows(self) -> Iterator[Row]:
        header = self.header or []
        for row in self._rows:
            self.done = self._reader.done
            if self._reader.rows_read % _TICK == 0:
                self.tick()
            if row.error is not None:  # its readable cells kept, for a user to fix it
                cells = dict(zip(header, row.values, strict=False))
                raw = _cells_raw(cells, header, row.texts) if row.values else b""
                yield Row(row.number, cells, raw, _unreadable(row.error, row.error_type))
                continue
            blank = all(blank_cell(v) for v in row.values)
            if blank and not row.beyond and not row.unsaved:
                continue  # a row of formulas without saved values is not known to be blank
            # not for a skipped blank row: sheets hold many
            cells = dict(zip(header, row.values, strict=False))
            raw = _cells_raw(cells, header, row.texts)
            problem = None
            if row.beyond:
                problem = _unreadable(f"the row has cells beyond the {len(header)} columns")
            unsaved = {header[c - 1]: c for c in row.unsaved}
            failed = {header[c - 1]: c for c in row.failed}
            yield Row(row.number, cells, raw, problem, unsaved=unsaved, blank=blank, failed=failed)
        self.done = self.total


def _cells_raw(cells: dict[str, Any], header: list[str], texts: dict[int, str]) -> bytes:
    """A sheet row's original form for its dead letter: its cells as JSON by header.

    Strict JSON (a consumer of the dead letters must be able to parse it): a number
    JSON has no form for (`1e400`, thousands of digits: infinite as a float) is the
    cell's text, which `json.dumps` would have written as `Infinity`."""
    shown = {name: _finite(value) for name, value in cells.items()}
    shown.update((header[column - 1], text) for column, text in texts.items())
    return json.dumps(shown, default=str, ensure_ascii=False, allow_nan=False).encode()


def _finite(value: Any) -> Any:
    """A value JSON can hold: a non-finite float the reader kept no text of as `inf`."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# --- NDJSON -----------------------------------------------------------------------------


class _NdjsonTable(Table):
    @classmethod
    def open(cls, path: Path) -> _NdjsonTable:
        handle = path.open("rb")
        return cls(path=path, format="ndjson", total=path.stat().st_size, _close=[handle])

    def rows(self) -> Iterator[Row]:
        handle = self._close[0]
        for number, line in binary_lines(handle):
            if isinstance(line, LongLine):
                self.done = handle.tell()
                if line.blank:  # blank however long, as a short one
                    continue
                yield Row(number, {}, line.start, _long_problem(line), (line.size, line.sha256))
                continue
            self.done = handle.tell()
            text = line.rstrip(b"\r\n")
            if json_blank(text):
                if number % _TICK == 0:
                    self.tick()
                continue
            try:
                value = json.loads(text, parse_constant=_reject_constant, parse_int=_json_int)
                # the parser kept one of two equal keys; a record is written once per key.
                # Inside the `try`: its hook is a frame deeper, so a line nested just
                # within the parser's depth may be too deep for this second parse
                twice = (
                    repeated_keys(text.decode(json.detect_encoding(text)), fix=WRITE_ONCE)
                    if isinstance(value, dict)
                    else []
                )
            except (ValueError, UnicodeDecodeError) as exc:
                detail = ErrorDetail(loc="", msg=f"not JSON: {exc}"[:300], type="json_invalid")
                yield Row(number, {}, text, (ReasonCode.NOT_JSON, detail))
                continue
            except RecursionError:  # `[[[[...` deeper than Python's parser goes
                detail = ErrorDetail(loc="", msg="not JSON: nested too deeply", type="json_invalid")
                yield Row(number, {}, text, (ReasonCode.NOT_JSON, detail))
                continue
            if not isinstance(value, dict):
                detail = ErrorDetail(loc="", msg="the line is not a JSON object", type="not_object")
                yield Row(number, {}, text, (ReasonCode.NOT_OBJECT, detail))
                continue
            if twice:
                yield Row(number, {}, text, (ReasonCode.VALIDATION_FAILED, twice[0]))
                continue
            yield Row(number, value, text, typed=True)


def _json_int(text: str) -> int | float:
    """An integer of more digits than a float's range holds parses as the infinity a
    number that long in float form (`1e400`) gives, which the mapper reports as out of
    range: Python's `int()` refuses 4,300 digits and more with advice to call
    `sys.set_int_max_str_digits()`, which made the line `not_json`."""
    if len(text) > _FLOAT_DIGITS:
        return float("-inf") if text.startswith("-") else float("inf")
    return int(text)


_FLOAT_DIGITS: Final = 309
"""Digits of the largest finite float (1.8e308), a minus sign included or not."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
