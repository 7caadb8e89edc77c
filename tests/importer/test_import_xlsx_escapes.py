"""Excel's `_xHHHH_` escapes (OOXML ST_Xstring) are read as the characters Excel means,
so a control character in an XLSX cell meets the validation the same character in a
CSV cell does; openpyxl left them as text (`_x000B_` imported as an id)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from import_outcomes import import_outcomes
from shared_strings import saved_by_openpyxl as saved_as_xlsx
from shared_strings import with_shared_strings

from chainwatch.importer.pipeline import Accepted, Rejected
from chainwatch.importer.xstring import LoneSurrogate, decode_xstring

TIME = "2026-11-23T09:30:00Z"
HEADER = ["unit_id", "status", "event_time", "note"]
#: As the sheet XML holds them (what openpyxl writes for these texts), and as Excel means them.
WRITTEN = [
    ["U_x000B_2", "up", TIME, ""],  # a vertical tab in the id
    ["U_x005F_x000B_3", "up", TIME, ""],  # the literal text `_x000B_`, escaped
    ["U-4", "up", TIME, "a_x000b_b"],  # lower-case hex, in a column not read
    ["U-5", "up_x000C_", TIME, ""],  # a form feed after the status
    ["U_x005f_x0001_6", "up", TIME, "_x"],  # escaped with lower-case hex; no escape
]
MEANT = [
    ["U\x0b2", "up", TIME, ""],
    ["U_x000B_3", "up", TIME, ""],
    ["U-4", "up", TIME, "a\x0bb"],
    ["U-5", "up\x0c", TIME, ""],
    ["U_x0001_6", "up", TIME, "_x"],
]


def summary(got: list[Accepted | Rejected]) -> list[tuple[Any, ...]]:
    return [
        (o.row, o.key, json.loads(o.value)["unit_id"])
        if isinstance(o, Accepted)
        else (o.row, o.key, o.reason_code.value, [(e.loc, e.type) for e in o.errors])
        for o in got
    ]


def saved_by_openpyxl(tmp_path: Path, rows: list[list[str]], shared: bool) -> Path:
    path = saved_as_xlsx([HEADER, *rows], tmp_path / "units.xlsx")
    return with_shared_strings(path, tmp_path / "shared.xlsx") if shared else path


@pytest.mark.parametrize("shared", [False, True], ids=["inline", "shared"])
def test_escaped_control_characters_meet_the_validation_the_same_csv_cells_do(
    tmp_path: Path, shared: bool
) -> None:
    path = saved_by_openpyxl(tmp_path, WRITTEN, shared)
    as_csv = tmp_path / "units.csv"
    with as_csv.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *MEANT])
    got = summary(import_outcomes("unit-status", path))
    assert got == summary(import_outcomes("unit-status", as_csv))
    assert got[0] == (2, "U\x0b2", "validation_failed", [("unit_id", "string_pattern_mismatch")])
    assert got[1] == (3, "U_x000B_3", "U_x000B_3")  # the literal text, as Excel shows it
    assert got[2] == (4, "U-4", "U-4")
    assert got[3] == (5, "U-5", "U-5")  # cut of its whitespace, as in the CSV
    assert got[4] == (6, "U_x0001_6", "U_x0001_6")


@pytest.mark.parametrize("shared", [False, True], ids=["inline", "shared"])
def test_a_lone_surrogate_escape_rejects_its_row_keeping_the_other_cells(
    tmp_path: Path, shared: bool
) -> None:
    """Decoded as it is, `_xD800_` made the row's dead letter (UTF-8) fail to encode."""
    rows = [["U-2", "up", TIME, "a_xD800_b"], ["U-3", "up", TIME, "_xD83D__xDE00_"]]
    got = import_outcomes("unit-status", saved_by_openpyxl(tmp_path, rows, shared))
    assert [(o.row, type(o).__name__) for o in got] == [(2, "Rejected"), (3, "Accepted")]
    bad = got[0]
    assert isinstance(bad, Rejected)
    assert bad.errors[0].msg == (
        "cell D2 holds _xD800_, half of a UTF-16 pair without its other half, "
        "which is not Unicode text"
    )
    assert json.loads(bad.raw) == {"unit_id": "U-2", "status": "up", "event_time": TIME,
                                   "note": None}  # fmt: skip


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("plain", "plain"),
        ("_x000B_", "\x0b"),
        ("_x000b_", "\x0b"),
        ("_x005F_x000B_", "_x000B_"),  # the escape of `_x000B_` itself
        ("_x005F__x000B_", "_\x0b"),
        ("a_x005F_b", "a_b"),
        ("x005F_", "x005F_"),  # no escape: openpyxl's shared strings lost it
        ("_x00B_", "_x00B_"),  # three digits: no escape
        ("_x000G_", "_x000G_"),
        ("_X000B_", "_X000B_"),  # Excel writes (and reads) a lower-case x only
        ("_x000D__x000A_", "\r\n"),
        ("_xD83D__xDE00_", "\U0001f600"),  # a character past U+FFFF: a UTF-16 pair
    ],
)
def test_decoding(written: str, meant: str) -> None:
    assert decode_xstring(written) == meant


@pytest.mark.parametrize("written", ["_xD800_", "_xDE00_", "_xDE00__xD83D_", "a_xD83D_b"])
def test_half_a_pair_is_no_text(written: str) -> None:
    with pytest.raises(LoneSurrogate, match=r"^_x[0-9A-F]{4}_, half of a UTF-16 pair"):
        decode_xstring(written)
