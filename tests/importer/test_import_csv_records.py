"""A CSV record spread over many lines (quoted line breaks) is bounded like a line: one
bad row, read in bounded memory, and the next record is read from its own start."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pytest

from chainwatch.importer.csv_records import MAX_RECORD_BYTES, RecordEnd
from chainwatch.importer.pipeline import Accepted, Rejected
from chainwatch.importer.tables import ImportFailed, open_table
from schemas.import_mapping import ImportMapping
from tests.importer.test_import_long_lines import run

HEAD = b"unit_id,status,event_time,note\nU-1,up,2026-11-23T09:30:00Z,\n"
LAST = b"U-3,up,2026-11-23T09:30:00Z,\n"


def test_a_record_of_megabytes_over_many_lines_is_one_bad_row_in_bounded_memory(
    tmp_path: Path,
) -> None:
    """1,000 quoted notes of 100 KB each (lines of 100 bytes) took 450 MB for 100 MB,
    and the whole record became the dead letter's value."""
    note = b'"' + b"x" * 99 + (b"\n" + b"x" * 99) * 1000 + b'"'
    record = b"U-2,up,2026-11-23T09:30:00Z," + b",".join([note] * 30)
    path = tmp_path / "units.csv"
    path.write_bytes(HEAD + record + b"\n" + LAST)
    outcomes, peak = run("unit-status", path)
    first, bad, last = outcomes
    assert isinstance(first, Accepted)
    assert isinstance(bad, Rejected)
    assert bad.row == 3
    assert bad.errors[0].type == "import_record_too_long"
    assert bad.whole == (len(record), hashlib.sha256(record).hexdigest())
    assert len(bad.raw) <= MAX_RECORD_BYTES
    assert isinstance(last, Accepted)
    assert last.row == 3 + record.count(b"\n") + 1
    assert peak < 12 * MAX_RECORD_BYTES, f"{peak:,} bytes held for a {len(record):,}-byte record"


def test_the_lines_of_a_field_the_csv_reader_refuses_are_not_read_as_records(
    tmp_path: Path,
) -> None:
    """A quoted note over csv's 128 KB: its later lines were read as rows, a million
    rejected rows for one note, and a line of it that looked like a row was imported."""
    fake = b"U-9,up,2026-11-23T09:30:00Z,"
    note = b'"' + (b"y" * 99 + b"\n") * 2000 + fake + b'"'
    path = tmp_path / "units.csv"
    path.write_bytes(HEAD + b"U-2,up,2026-11-23T09:30:00Z," + note + b"\n" + LAST)
    outcomes, _ = run("unit-status", path)
    first, bad, last = outcomes
    assert isinstance(first, Accepted)
    assert isinstance(bad, Rejected)
    end = 3 + note.count(b"\n")
    assert (bad.row, bad.errors[0].msg) == (
        3,
        f"field larger than field limit (131072) on lines 3-{end}",
    )
    assert isinstance(last, Accepted)
    assert last.key == "U-3"
    assert last.row == end + 1


def test_a_quote_never_closed_says_the_rest_of_the_file_became_its_record(
    tmp_path: Path,
) -> None:
    """The rest of the file was one row rejected for its `status` ("up,2026-...
    U-3,..." is no status): three rows gone from the count, and no word why."""
    path = tmp_path / "units.csv"
    path.write_bytes(HEAD + b'U-2,"up,2026-11-23T09:30:00Z,\n' + LAST + LAST)
    first, bad = run("unit-status", path)[0]
    assert isinstance(first, Accepted)
    assert isinstance(bad, Rejected)
    assert bad.errors[0].msg == (
        "a quote in this record is never closed, so lines 3-5 (the rest of the file) were "
        "read as this one record"
    )


@pytest.mark.parametrize(
    "after",
    [LAST * 5000, b"x" * 2 * MAX_RECORD_BYTES + b"\n" + LAST],
    ids=["over-the-field-limit", "over-the-record-limit"],
)
def test_a_quote_never_closed_before_a_long_rest_is_named_not_the_size(
    tmp_path: Path, after: bytes
) -> None:
    """With over 128 KB after the quote the rejection said "field larger than field
    limit (131072)" (or the record's size), naming neither the quote nor the lines
    it swallowed."""
    path = tmp_path / "units.csv"
    path.write_bytes(HEAD + b'U-2,"up,2026-11-23T09:30:00Z,\n' + after)
    first, bad = run("unit-status", path)[0]
    assert isinstance(first, Accepted)
    assert isinstance(bad, Rejected)
    end = 3 + after.count(b"\n")
    assert bad.errors[0].msg == (
        f"a quote in this record is never closed, so lines 3-{end} (the rest of the file) "
        "were read as this one record"
    )


def test_a_header_line_too_long_is_measured_as_a_line_whatever_its_quotes(
    tmp_path: Path,
) -> None:
    """The csv reader reads the header alone: a quote in it opens no record."""
    path = tmp_path / "units.csv"
    path.write_bytes(b'"' + b"h" * 2 * MAX_RECORD_BYTES + b"\n" + LAST * 1000)
    with pytest.raises(ImportFailed, match=r"header row 1 is 2,097,153 bytes"):
        open_table(path, ImportMapping())


@pytest.mark.parametrize(
    "text",
    [
        "a,b\nc,d\n",
        'a,"b\nc",d\ne\n',
        'a,"b""\n""c"\nd\n',
        'a,b"c\nd,"e\n"\nf\n',  # a quote inside an unquoted field is text
        'a,"b"c\nd\n',  # a quote after the closing one: the quotes are over
        'a;"b,\n;c"\r\nd\r\n',
        '"a\r\nb",c\r\n"d"\r\n',
        ',,"\n\n\n",\n,\n',
    ],
)
def test_records_end_on_the_lines_the_csv_reader_ends_them(text: str) -> None:
    delimiter = ";" if ";" in text else ","
    ends = RecordEnd(delimiter)
    ours = [i for i, line in enumerate(io.StringIO(text, newline=""), 1) if ends.feed(line)]
    lines = iter(io.StringIO(text, newline=""))
    counted = [0]

    def counting() -> str:
        counted[0] += 1
        return next(lines)

    reader = csv.reader(iter(counting, None), delimiter=delimiter)
    theirs = [counted[0] for _ in reader]
    assert ours == theirs
