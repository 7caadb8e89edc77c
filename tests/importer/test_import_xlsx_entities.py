"""XML entities in the parts openpyxl parses itself (shared strings, workbook), and the sheet.

`sheet_xml` refuses a document type in the rows it reads, but openpyxl parsed the
shared strings, the workbook part and the sheet's start (for its dimension) at open,
with the standard library's parser: a "billion laughs" expanded to expat's
amplification limit (tens of MB from a part of a few KB; ~100 times a part of
tens of MB) and an external entity became an empty cell, unseen.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from memory_peak import peak_memory

from chainwatch.importer.pipeline import Accepted
from chainwatch.importer.tables import ImportFailed
from tests.importer.test_import_cli import cli
from tests.importer.test_import_sheet_xml import EXTERNAL, LAUGHS
from tests.importer.test_import_xlsx_hostile import (
    HEADER,
    MAIN,
    TIME,
    cell,
    outcomes,
    row,
    sheet,
    xlsx,
)

SHARED_STRINGS_TYPE = (
    b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.'
    b'openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'
)
ATTACKS = {"billion laughs": (LAUGHS, "&j;"), "external entity": (EXTERNAL, "&e;")}
#: The part, and how the one-line error starts after the file's name: openpyxl parses
#: the first two at open, the sheet only the import's own reader (`sheet_xml`) parses.
PARTS = {
    "xl/sharedStrings.xml": "not a readable XLSX workbook (its shared strings part declares "
    "XML entities (EntitiesForbidden)",
    "xl/workbook.xml": "not a readable XLSX workbook (its workbook part (or its relations) "
    "declares XML entities (EntitiesForbidden)",
    "xl/worksheets/sheet1.xml": "the sheet cannot be read after row 0 (SyntaxError: the sheet "
    "declares a document type",
}


def hostile_book(tmp_path: Path, part: str, attack: str | None) -> Path:
    """A workbook of a header and one good row whose `part` declares the attack's
    entities (None: none) and uses the entity in a string: the unit id (a shared
    string), the sheet's name or a header cell."""
    declaration, entity = ATTACKS[attack] if attack else ("", "")

    def declared(xml: str, root: str) -> str:
        return xml.replace(f"<{root}", declaration.replace("worksheet", root) + f"<{root}", 1)

    good = '<row r="2"><c r="A2" t="s"><v>0</v></c>' + cell("B2", "up") + cell("C2", TIME)
    rows = row(1, *HEADER) + good + "</row>"
    strings = f'<sst xmlns="{MAIN}" count="1" uniqueCount="1"><si><t>U-2</t></si></sst>'
    with zipfile.ZipFile(xlsx(tmp_path, sheet(rows))) as template:
        types = template.read("[Content_Types].xml").replace(b"</Types>", SHARED_STRINGS_TYPE)
        workbook = template.read("xl/workbook.xml").decode()
    if part == "xl/sharedStrings.xml":
        strings = declared(strings.replace("U-2", f"U-2{entity}"), "sst")
    elif part == "xl/workbook.xml":
        workbook = declared(workbook.replace('name="Sheet"', f'name="Sheet{entity}"'), "workbook")
    else:
        rows = declared(sheet(rows.replace(">status<", f">status{entity}<")), "worksheet")
    return xlsx(
        tmp_path,
        rows if rows.startswith("<?xml") else sheet(rows),
        **{
            "[Content_Types].xml": types,
            "xl/sharedStrings.xml": strings,
            "xl/workbook.xml": workbook,
        },
    )


@pytest.mark.parametrize("part", PARTS)
def test_the_same_workbook_without_entities_is_imported(tmp_path: Path, part: str) -> None:
    """The hostile books below differ from these only by the declaration and its use."""
    got = outcomes(hostile_book(tmp_path, part, None))
    assert [(o.row, type(o).__name__) for o in got] == [(2, "Accepted")]
    assert isinstance(got[0], Accepted)
    assert json.loads(got[0].value)["unit_id"] == "U-2"


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("part", PARTS)
def test_entities_in_a_part_openpyxl_parses_refuse_the_file_in_bounded_memory(
    tmp_path: Path, part: str, attack: str
) -> None:
    path = hostile_book(tmp_path, part, attack)
    with pytest.raises(ImportFailed):
        outcomes(path)  # openpyxl's modules imported, not counted below
    with peak_memory() as peak, pytest.raises(ImportFailed) as caught:
        outcomes(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {PARTS[part]}"), message
    # the laughs in the workbook part peaked at 8 MB, in the sheet at 42 MB, with
    # expat's default amplification limit; a part of 10 MB could take 1 GB
    assert peak.bytes < 1_000_000, peak.bytes


@pytest.mark.slow
@pytest.mark.parametrize("part", PARTS)
def test_chainwatch_import_refuses_the_file_in_one_line_before_kafka(
    tmp_path: Path, part: str
) -> None:
    """Nothing published: the files are opened before Kafka is contacted, and
    nothing listens at the bootstrap (had the import got past the file, the line
    would say Kafka is unreachable)."""
    path = hostile_book(tmp_path, part, "billion laughs")
    env = {"CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    result = cli(str(path), "--kind", "unit-status", "--to", "kafka", data_dir=tmp_path, **env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr  # no traceback
    assert lines[0].startswith(f"error: {path}: {PARTS[part]}"), lines[0]


def test_without_defusedxml_no_workbook_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """openpyxl picks defusedxml at its import, when installed and not turned off
    (`OPENPYXL_DEFUSEDXML=False`): without it the refusals above would silently go."""
    import openpyxl

    monkeypatch.setattr(openpyxl, "DEFUSEDXML", False)
    with pytest.raises(ImportFailed, match=r"without defusedxml, expanding any XML entity"):
        outcomes(hostile_book(tmp_path, "xl/workbook.xml", None))


def test_a_workbook_openpyxl_cannot_read_leaves_no_file_open(tmp_path: Path) -> None:
    """openpyxl's reader kept the zip's file open when a part failed after it had
    opened the sheet (for its dimension): a descriptor per refused file until the
    garbage collector found it, and a ResourceWarning then."""
    for part in PARTS:
        path = hostile_book(tmp_path, part, "external entity")
        before = len(os.listdir("/dev/fd"))
        with pytest.raises(ImportFailed):
            outcomes(path)
        assert len(os.listdir("/dev/fd")) == before, part


def test_entities_in_the_workbooks_relations_are_said_to_be_there(tmp_path: Path) -> None:
    """openpyxl reads the workbook's relations when it looks for the sheets: the
    refusal named "a worksheet", which the user would look for in vain."""
    path = hostile_book(tmp_path, "xl/workbook.xml", None)
    rels = "xl/_rels/workbook.xml.rels"
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    declaration = LAUGHS.replace("worksheet", "Relationships").encode()
    parts[rels] = parts[rels].replace(b"<Relationships", declaration + b"<Relationships", 1)
    with zipfile.ZipFile(path, "w") as book:
        for name, data in parts.items():
            book.writestr(name, data)
    with pytest.raises(ImportFailed) as caught:
        outcomes(path)
    assert str(caught.value).startswith(
        f"{path}: not a readable XLSX workbook (its workbook's relations (or a chart sheet) "
        "declares XML entities (EntitiesForbidden)"
    ), caught.value


def test_a_part_openpyxl_cannot_read_is_named_with_its_cause(tmp_path: Path) -> None:
    """openpyxl wraps a value it refuses in three lines of its own, the file's name
    twice and "see the exception", which the user never saw: the cause was cut off."""
    path = hostile_book(tmp_path, "xl/workbook.xml", None)
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    assert b'state="visible"' in parts["xl/workbook.xml"]
    parts["xl/workbook.xml"] = parts["xl/workbook.xml"].replace(b'"visible"', b'"shown"')
    with zipfile.ZipFile(path, "w") as book:
        for name, data in parts.items():
            book.writestr(name, data)
    with pytest.raises(ImportFailed) as caught:
        outcomes(path)
    message = str(caught.value)
    assert message.startswith(
        f"{path}: not a readable XLSX workbook (its workbook part (or its relations) cannot "
        "be read: ValueError: Value must be one of"
    ), message
    assert message.count(str(path)) == 1, message
