"""Which CSV and XLSX rows are blank (skipped) and which cells are empty: one rule for
both formats (chainwatch.importer.blank), the rows a user sees as empty and nothing else."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from import_outcomes import import_outcomes
from shared_strings import saved_by_openpyxl

from chainwatch.importer.blank import blank_cell, invisible_cell
from chainwatch.importer.errors import ImportFailed
from chainwatch.importer.mapper import Problem, RowMapper
from chainwatch.importer.pipeline import Accepted, Rejected
from schemas.import_mapping import ImportMapping
from schemas.plan import load_plan

PLAN = load_plan()
TIME = "2026-11-23T09:30:00Z"
HEADER = ["unit_id", "status", "event_time", "note"]
ROWS: list[list[Any]] = [
    ["U-2", "up", TIME, ""],
    ["", "", "", ""],  # empty: skipped
    [" ", "\t", "  ", " \t "],  # blanks a user typed: skipped
    ["\xa0", "\xa0", "\xa0", ""],  # no-break spaces: every read cell is a bad value
    ["U-6", "\u2003", TIME, ""],  # an em space where the status should be
    ["", "", "", "\xa0"],  # something in a column not read: no blank row
    ["U-8", "up", TIME, "\u3000"],  # ... nor a bad one when the rest is a record
    ["U-9", "up", TIME, "", "\xa0"],  # right of the header: the row's shape is wrong
]
OUTCOMES = [
    (2, "accepted", []),
    (5, "validation_failed", [(f, "import_invisible") for f in HEADER[:3]]),
    (6, "validation_failed", [("status", "import_invisible")]),
    (7, "validation_failed", [("unit_id", "missing"), ("status", "missing"),
                              ("event_time", "missing")]),
    (8, "accepted", []),
    (9, "validation_failed", [("", "import_row")]),
]  # fmt: skip


def outcomes(path: Path) -> list[tuple[int, str, list[tuple[str, str]]]]:
    got = import_outcomes("unit-status", path)
    return [
        (o.row, "accepted", [])
        if isinstance(o, Accepted)
        else (o.row, o.reason_code.value, [(e.loc, e.type) for e in o.errors])
        for o in got
        if isinstance(o, Accepted | Rejected)
    ]


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *rows])
    return path


def test_a_csv_row_of_invisible_characters_is_rejected_not_skipped_as_blank(
    tmp_path: Path,
) -> None:
    """A row of only U+00A0, a vertical tab or a form feed was skipped as blank
    (`str.strip()`): not counted, not rejected, gone."""
    controls = ["\x0b", "\x0c", "\x0b\x0c", ""]
    line_break = [" \r\n ", "", "", ""]  # a quoted cell of a line break (lines 11-12)
    rows = [*ROWS, controls, line_break, ["U-13", "up", TIME, ""]]
    assert outcomes(write_csv(tmp_path / "units.csv", rows)) == [
        *OUTCOMES,
        (10, "validation_failed", [(f, "import_invisible") for f in HEADER[:3]]),
        (13, "accepted", []),
    ]


def test_an_xlsx_row_is_blank_exactly_when_the_same_csv_row_is(tmp_path: Path) -> None:
    path = saved_by_openpyxl([HEADER, *ROWS], tmp_path / "units.xlsx")
    assert outcomes(path) == OUTCOMES


@pytest.mark.parametrize("cell", [None, "", " ", "\t \r\n"])
def test_blank_cells(cell: str | None) -> None:
    assert blank_cell(cell)
    assert invisible_cell(cell) is None


@pytest.mark.parametrize("cell", ["\xa0", "\x0b", "\x0c", " \u2003\t", "\x1c", "\x85"])
def test_invisible_cells_are_named(cell: str) -> None:
    assert not blank_cell(cell)
    why = invisible_cell(cell)
    assert why is not None
    shown = cell.strip(" \t")[0]
    assert f"U+{ord(shown):04X}" in why


@pytest.mark.parametrize("cell", ["x", " x ", "\xa0x", 0, 0.0, False])
def test_values(cell: object) -> None:
    assert not blank_cell(cell)
    assert invisible_cell(cell) is None


@pytest.mark.parametrize("text", ["\xa0", "\u3000", " \x0b "])
def test_an_ndjson_attribute_of_invisible_whitespace_is_kept_as_it_is(text: str) -> None:
    """As an NDJSON field's string of such whitespace is: it was cut to "", an
    attribute the line does not hold (before, it was no attribute at all)."""
    mapper = RowMapper(ImportMapping.model_validate({"attributes": {"shade": "Farbe"}}), "scans")
    record, problems = mapper.map({"Farbe": text, "lot_id": text}, typed=True)
    assert (record, problems) == ({"lot_id": text, "attributes": {"shade": text}}, [])
    for blank in (" ", "\t\r\n"):
        assert mapper.map({"Farbe": blank}, typed=True) == ({}, [])
    assert mapper.map({"Farbe": " red "}, typed=True) == ({"attributes": {"shade": "red"}}, [])


@pytest.mark.parametrize("text", ["\xa0", " \u3000\t", " 25:00 "])
def test_an_ndjson_time_that_is_no_time_is_shown_as_it_is(text: str) -> None:
    """Shown cut of its whitespace, a time of U+00A0 only read `'' matches none of the
    time formats`, as if the line held an empty string."""
    mapper = RowMapper(ImportMapping.model_validate({}), "unit-status")
    assert mapper.map({"event_time": text}, typed=True)[1] == [
        Problem("event_time", f"{text!r} matches none of the time formats (iso)",
                "import_time_format"),
    ]  # fmt: skip


@pytest.mark.parametrize("names", [["\xa0"], ["", "\u3000", " "]])
def test_a_header_of_invisible_whitespace_is_empty_in_both_formats(
    tmp_path: Path, names: list[str]
) -> None:
    """A header name is cut of all whitespace, so such a header names no column: the
    XLSX one was taken for a header and the import failed on the columns it lacks
    (`(columns: )`), where the same CSV header is empty."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(names)
    sheet.append(["U-1", "up", TIME])
    xlsx = tmp_path / "units.xlsx"
    book.save(xlsx)
    csv_path = tmp_path / "units.csv"
    csv_path.write_text(",".join(names) + f"\nU-1,up,{TIME}\n", encoding="utf-8")
    for path in (xlsx, csv_path):
        with pytest.raises(ImportFailed, match=r"header row 1 is empty$"):
            outcomes(path)
