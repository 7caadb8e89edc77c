"""XLSX files built to hurt: stale or absurd dimensions, zip bombs, cells and XML that
openpyxl cannot read. Each is imported in full, rejected row by row, or refused in one
line, within a bounded time and memory."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from import_outcomes import import_outcomes
from memory_peak import peak_memory

from chainwatch.importer.errors import FileBroken
from chainwatch.importer.mapper import RowMapper
from chainwatch.importer.outputs import ScenarioWriter
from chainwatch.importer.pipeline import Accepted, Importer, Rejected
from chainwatch.importer.run import import_to_file, import_to_kafka, open_tables
from chainwatch.importer.tables import ImportFailed, Table, open_table
from schemas.import_mapping import ImportMapping
from schemas.plan import load_plan
from streams.topics import TopicNames

PLAN = load_plan()
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
HEADER = ("unit_id", "status", "event_time")
TIME = "2026-11-23T09:30:00Z"


def cell(ref: str, value: str | int | float) -> str:
    if isinstance(value, str):
        return f'<c r="{ref}" t="inlineStr"><is><t>{value}</t></is></c>'
    return f'<c r="{ref}"><v>{value}</v></c>'


def row(number: int, *values: str | int | float) -> str:
    cells = "".join(cell(f"{'ABCDE'[i]}{number}", v) for i, v in enumerate(values))
    return f'<row r="{number}">{cells}</row>'


def unit(number: int, unit_id: str | int | float = "") -> str:
    return row(number, unit_id or f"U-{number}", "up", "2026-11-23T09:30:00Z")


def sheet(rows: str, dimension: str = "A1:C1") -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{MAIN}">'
        f'<dimension ref="{dimension}"/><sheetData>{rows}</sheetData></worksheet>'
    )


def xlsx(tmp_path: Path, sheet_xml: str, **parts: str | bytes) -> Path:
    """A workbook openpyxl wrote, with its first sheet (and any other part) replaced."""
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["x"])  # type: ignore[union-attr]
    plain = tmp_path / "plain.xlsx"
    book.save(plain)
    replaced = {"xl/worksheets/sheet1.xml": sheet_xml, **parts}
    path = tmp_path / "orders.xlsx"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = replaced.pop(info.filename, None)
            dst.writestr(info.filename, src.read(info) if data is None else data)
        for name, data in replaced.items():
            dst.writestr(name, data)
    return path


def only_row_3_rejected(got: list[Accepted | Rejected]) -> Rejected:
    """Rows 2 and 4 accepted around row 3, which is rejected: row 3's outcome."""
    assert [(o.row, type(o).__name__) for o in got] == [
        (2, "Accepted"),
        (3, "Rejected"),
        (4, "Accepted"),
    ]
    bad = got[1]
    assert isinstance(bad, Rejected)
    return bad


def outcomes(path: Path) -> list[Accepted | Rejected]:
    return import_outcomes("unit-status", path)


def test_rows_below_a_stale_dimension_are_imported_not_dropped(tmp_path: Path) -> None:
    rows = row(1, *HEADER) + "".join(unit(n) for n in range(2, 21))
    got = outcomes(xlsx(tmp_path, sheet(rows, dimension="A1:F3")))
    assert [o.row for o in got] == list(range(2, 21))
    assert all(isinstance(o, Accepted) for o in got)


@pytest.mark.timeout(20)
def test_an_absurd_dimension_and_a_far_cell_cost_nothing_beyond_the_rows_present(
    tmp_path: Path,
) -> None:
    """Before: ~1M padding rows of 16,384 cells each, over a minute at 100% CPU."""
    rows = row(1, *HEADER) + unit(2) + '<row r="7"><c r="XFD7"><v>1</v></c></row>' + unit(1048576)
    got = outcomes(xlsx(tmp_path, sheet(rows, dimension="A1:XFD1048576")))
    assert [(o.row, type(o).__name__) for o in got] == [
        (2, "Accepted"),
        (7, "Rejected"),
        (1048576, "Accepted"),
    ]
    far = got[1]
    assert isinstance(far, Rejected)
    assert "beyond the 3 columns" in far.reason
    assert len(far.raw) < 200  # the row was cut at the header's width, not 16,384 cells


def test_progress_is_reported_while_blank_rows_are_read(tmp_path: Path) -> None:
    blanks = "".join(f'<row r="{n}" ht="20" customHeight="1"/>' for n in range(2, 20_002))
    path = xlsx(tmp_path, sheet(row(1, *HEADER) + blanks + unit(20_002)))
    importer = Importer(RowMapper(ImportMapping(), "unit-status"), PLAN)
    seen: list[int] = []

    def progress(table: Table) -> None:
        seen.append(table.done)

    with open_table(path, ImportMapping()) as table:
        got = list(importer.outcomes(table, progress))
    assert [o.row for o in got] == [20_002]
    assert len(seen) >= 4  # every 4,096 rows read, not only per 500 non-blank rows
    assert seen == sorted(seen)
    assert seen[-1] == table.total


def test_a_blank_row_costs_no_dead_letter_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row's cells were written as JSON (its `raw`) before blank rows were
    skipped: work for nothing on sheets of many blank rows."""
    blanks = "".join(row(n, " ", "") for n in range(2, 202))
    path = xlsx(tmp_path, sheet(row(1, *HEADER) + blanks + unit(202)))
    dumped: list[object] = []
    dumps = json.dumps

    def counting(value: object, **kwargs: Any) -> str:
        dumped.append(value)
        return dumps(value, **kwargs)

    with open_table(path, ImportMapping()) as table:
        monkeypatch.setattr(json, "dumps", counting)
        got = list(table.rows())
        monkeypatch.undo()
    assert [r.number for r in got] == [202]
    assert len(dumped) == 1


def test_a_shared_strings_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    strings = "<si><t>x</t></si>" * 2_000_000  # 34 MB that deflate to ~100 KB
    bomb = f'<sst xmlns="{MAIN}" count="2000000" uniqueCount="2000000">{strings}</sst>'
    path = xlsx(tmp_path, sheet(row(1, *HEADER)), **{"xl/sharedStrings.xml": bomb})
    assert path.stat().st_size < 500_000
    with pytest.raises(ImportFailed) as caught:
        open_table(path, ImportMapping())
    message = str(caught.value)
    assert "zip bomb" in message
    assert "xl/sharedStrings.xml" in message
    assert "\n" not in message


@pytest.mark.parametrize("bad", ["nan", "abc"])
def test_a_number_cell_openpyxl_cannot_read_rejects_its_row_only(tmp_path: Path, bad: str) -> None:
    broken = f'<row r="3"><c r="A3" t="n"><v>{bad}</v></c></row>'
    rows = row(1, *HEADER) + unit(2) + broken + unit(4)
    bad_row = only_row_3_rejected(outcomes(xlsx(tmp_path, sheet(rows))))
    assert "cell A3 cannot be read" in bad_row.reason


def test_an_unreadable_cell_rejects_its_row_keeping_the_other_cells(tmp_path: Path) -> None:
    """The dead letter of such a row held no cell at all (`value_b64` empty), so
    nobody could see which row to fix or how."""
    broken = (
        '<row r="3"><c r="A3" t="inlineStr"><is><t>U-3</t></is></c>'
        '<c r="B3" t="b"><v>maybe</v></c><c r="C3" t="inlineStr"><is><t>'
        f"{TIME}</t></is></c></row>"
    )
    bad = only_row_3_rejected(
        outcomes(xlsx(tmp_path, sheet(row(1, *HEADER) + unit(2) + broken + unit(4))))
    )
    assert bad.reason.startswith("validation_failed: cell B3 cannot be read (ValueError")
    assert json.loads(bad.raw) == {"unit_id": "U-3", "status": None, "event_time": TIME}
    assert bad.key is None


def test_a_cell_holding_an_error_value_rejects_its_row_if_the_import_reads_it(
    tmp_path: Path,
) -> None:
    """openpyxl reads `#N/A` as that text: a customer was imported named "#N/A",
    one in region "#DIV/0!"."""

    def error(ref: str, value: str) -> str:
        return f'<c r="{ref}" t="e"><f>1/0</f><v>{value}</v></c>'

    head = row(1, *HEADER, "note")
    erred = unit(2).replace("</row>", error("D2", "#N/A") + "</row>")  # a column not read
    failing = unit(3).replace(
        '<c r="B3" t="inlineStr"><is><t>up</t></is></c>', error("B3", "#REF!")
    )
    bad = only_row_3_rejected(outcomes(xlsx(tmp_path, sheet(head + erred + failing + unit(4)))))
    assert bad.errors[0].msg.startswith("cell B3 holds the error value #REF!")
    assert json.loads(bad.raw)["status"] == "#REF!"  # what the operator sees in the cell


def test_a_row_with_two_cells_in_one_column_is_rejected_not_one_of_them_taken(
    tmp_path: Path,
) -> None:
    """openpyxl keeps both; the row took the last one's value unseen (U-9 for U-3)."""
    twice = unit(3).replace("</row>", cell("A3", "U-9") + "</row>")
    got = outcomes(xlsx(tmp_path, sheet(row(1, *HEADER) + unit(2) + twice + unit(4))))
    assert "cell A3 appears twice in the row" in only_row_3_rejected(got).reason


def test_a_negative_shared_string_index_rejects_its_row_not_reads_from_the_end(
    tmp_path: Path,
) -> None:
    """Python's list took `-1` as its last string: another cell's text ("down")
    was imported as the status, unseen."""
    strings = f'<sst xmlns="{MAIN}"><si><t>U-7</t></si><si><t>down</t></si></sst>'
    shared = (
        '<row r="2"><c r="A2" t="s"><v>0</v></c><c r="B2" t="s"><v>-1</v></c>'
        f'<c r="C2" t="inlineStr"><is><t>{TIME}</t></is></c></row>'
    )
    path = xlsx(tmp_path, sheet(row(1, *HEADER) + shared + unit(3)))
    with zipfile.ZipFile(path) as book:
        types = book.read("[Content_Types].xml").replace(
            b"</Types>",
            b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.'
            b'openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
        )
    path = xlsx(
        tmp_path,
        sheet(row(1, *HEADER) + shared + unit(3)),
        **{"[Content_Types].xml": types, "xl/sharedStrings.xml": strings},
    )
    got = outcomes(path)
    assert [(o.row, type(o).__name__) for o in got] == [(2, "Rejected"), (3, "Accepted")]
    bad = got[0]
    assert isinstance(bad, Rejected)
    assert bad.errors[0].msg == (
        "cell B2 cannot be read (IndexError: shared string index -1 is negative)"
    )
    assert json.loads(bad.raw)["unit_id"] == "U-7"  # the index 0 is read as before


@pytest.mark.parametrize("number", ["0", "-5", "1048577", "99999999999999999999999", "2", "1"])
def test_a_row_numbered_out_of_order_or_range_stops_the_import_in_one_line(
    tmp_path: Path, number: str
) -> None:
    """openpyxl takes any integer: `r="0"`, a negative, a huge, a repeated or a
    decreasing number was the row number of records and rejections."""
    odd = unit(3).replace('<row r="3"', f'<row r="{number}"')
    path = xlsx(tmp_path, sheet(row(1, *HEADER) + unit(2) + odd + unit(4)))
    with pytest.raises(FileBroken) as caught:
        outcomes(path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"the sheet's row after row 2 is numbered {number[:20]}" in message
    assert "1 rows of this file were read before" in message


def test_malformed_sheet_xml_mid_file_is_one_line_saying_how_far_it_got(tmp_path: Path) -> None:
    rows = row(1, *HEADER) + unit(2) + unit(3) + '<row r="4"><c r="A4"><v>1</c></row>'
    path = xlsx(tmp_path, sheet(rows))
    importer = Importer(RowMapper(ImportMapping(), "unit-status"), PLAN)
    out = tmp_path / "out.ndjson"
    tables = open_tables([path], ImportMapping(), importer)
    with pytest.raises(ImportFailed) as caught:
        import_to_file(importer, tables, ScenarioWriter(str(out)), lambda _r: None)
    for table in tables:
        table.close()
    message = str(caught.value)
    assert "\n" not in message
    assert "after row 3" in message
    assert "2 rows of this file were read before" in message
    assert "was not written" in message
    assert not out.exists()


@pytest.mark.parametrize("part", ["xl/workbook.xml", "xl/styles.xml", "xl/_rels/workbook.xml.rels"])
def test_a_malformed_workbook_part_is_one_line_at_open(tmp_path: Path, part: str) -> None:
    path = xlsx(tmp_path, sheet(row(1, *HEADER)), **{part: "<workbook><sheets>"})
    with pytest.raises(ImportFailed) as caught:
        open_table(path, ImportMapping())
    assert "not a readable XLSX workbook" in str(caught.value)
    assert "\n" not in str(caught.value)


class _FakeKafka:
    """Acknowledges whatever was sent, on flush."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.acknowledged = 0
        self._pending = 0

    async def start(self) -> None:
        pass

    async def send(self, _topic: str, _key: bytes | None, value: bytes) -> None:
        self.sent.append(value)
        self._pending += 1

    async def flush(self) -> None:
        self.acknowledged += self._pending
        self._pending = 0

    async def stop(self, timeout_s: float | None = None) -> None:
        pass


def test_broken_xml_with_to_kafka_says_how_many_records_were_published(tmp_path: Path) -> None:
    import asyncio

    rows = row(1, *HEADER) + unit(2) + unit(3) + "<row r='4'><c r='A4'><v>1</v></row>"
    path = xlsx(tmp_path, sheet(rows))
    importer = Importer(RowMapper(ImportMapping(), "unit-status"), PLAN)
    tables = open_tables([path], ImportMapping(), importer)
    kafka = _FakeKafka()
    with pytest.raises(ImportFailed) as caught:
        asyncio.run(
            import_to_kafka(importer, tables, kafka, TopicNames(""), lambda _r: None)  # type: ignore[arg-type]
        )
    for table in tables:
        table.close()
    assert not isinstance(caught.value, FileBroken)  # the writer said what became of the rows
    assert "Kafka acknowledged 2 records" in str(caught.value)
    assert len(kafka.sent) == 2


def test_an_id_beyond_2_53_is_rejected_not_rounded_to_another_id(tmp_path: Path) -> None:
    rows = row(1, *HEADER) + unit(2, 12345678901234567890) + unit(3, 4101)
    got = outcomes(xlsx(tmp_path, sheet(rows)))
    bad, good = got
    assert isinstance(bad, Rejected)
    assert bad.errors[0].type == "import_number_range"
    assert "12345678901234567890 is beyond +-2^53" in bad.reason
    assert isinstance(good, Accepted)
    assert json.loads(good.value)["unit_id"] == "4101"


def saved_by_openpyxl(tmp_path: Path, *rows: Sequence[Any]) -> Path:
    """`units.xlsx` written by openpyxl, which saves no result for a formula."""
    from openpyxl import Workbook

    book = Workbook()
    sheet_ = book.active
    assert sheet_ is not None
    for row in rows:
        sheet_.append(list(row))
    path = tmp_path / "units.xlsx"
    book.save(path)
    return path


def test_a_formula_openpyxl_wrote_without_its_value_rejects_the_row(tmp_path: Path) -> None:
    """Before: read as an empty cell, so `status` was reported missing (an optional
    field would have vanished unseen)."""
    path = saved_by_openpyxl(
        tmp_path,
        HEADER,
        ["U-2", '=IF(A2="","","up")', TIME],  # openpyxl saves no result
        ["U-3", "up", TIME],
    )
    bad, good = outcomes(path)
    assert isinstance(bad, Rejected)
    assert bad.row == 2
    assert bad.errors[0].type == "import_row"
    assert "cell B2 holds a formula without a saved value" in bad.reason
    assert "open and save the file in Excel, or export values" in bad.reason
    assert isinstance(good, Accepted)


def test_a_formula_without_its_value_in_a_column_the_import_does_not_read_is_no_harm(
    tmp_path: Path,
) -> None:
    """A `note` column of formulas (a library-written workbook) refused every row."""
    path = saved_by_openpyxl(
        tmp_path,
        [*HEADER, "note"],
        ["U-2", "up", TIME, '=CONCAT("unit ",A2)'],  # unsaved, not read
        ["U-3", '=IF(A3="","","up")', TIME, '=CONCAT("unit ",A3)'],  # B3 is read
    )
    good, bad = outcomes(path)
    assert isinstance(good, Accepted), good
    assert json.loads(good.value)["status"] == "up"
    assert isinstance(bad, Rejected)
    assert "cell B3 holds a formula without a saved value" in bad.reason  # not D3


def test_a_row_of_formulas_without_saved_values_is_rejected_not_skipped_as_blank(
    tmp_path: Path,
) -> None:
    """Before: every cell read as empty, so the row was skipped as blank: not counted,
    not rejected, gone (a sheet of `=Raw!A2` formulas imported "0 rows", exit 0)."""
    path = saved_by_openpyxl(
        tmp_path,
        [*HEADER, "note"],
        ["=Raw!A2", "=Raw!B2", "=Raw!C2"],  # every read cell unsaved
        [None, None, None, '=CONCAT("unit ",A4)'],  # unsaved, but only in a column not read
        ["U-4", "up", TIME],
    )
    got = outcomes(path)
    assert [(o.row, type(o).__name__) for o in got] == [(2, "Rejected"), (4, "Accepted")]
    assert "cell A2 holds a formula without a saved value" in got[0].reason  # type: ignore[union-attr]


def test_a_header_cell_holding_a_formula_without_its_value_stops_the_import(
    tmp_path: Path,
) -> None:
    """It read as an empty column name: "no column for the required field event_time"."""
    path = saved_by_openpyxl(
        tmp_path,
        [*HEADER[:2], '=CONCAT("event","_time")'],
        ["U-2", "up", TIME],
    )
    with pytest.raises(ImportFailed, match="header row 1: cell C1 holds a formula without"):
        outcomes(path)


def test_formulas_with_saved_values_and_beyond_the_header_are_read_as_before(
    tmp_path: Path,
) -> None:
    empty_text = '<c r="D2" t="str"><f>""</f><v/></c>'  # what Excel saves for a result of ""
    far = '<c r="E2"><f>A2*2</f><v/></c>'  # unsaved, but right of the header: never read
    saved = '<c r="B3" t="str"><f>"up"</f><v>up</v></c>'
    rows = (
        row(1, *HEADER, "note")
        + row(2, "U-2", "up", TIME).replace("</row>", empty_text + far + "</row>")
        + f'<row r="3">{cell("A3", "U-3")}{saved}{cell("C3", TIME)}</row>'
    )
    got = outcomes(xlsx(tmp_path, sheet(rows, dimension="A1:E3")))
    assert [(o.row, type(o).__name__) for o in got] == [(2, "Accepted"), (3, "Accepted")]
    assert json.loads(got[1].value)["status"] == "up"  # type: ignore[union-attr]


def test_a_number_cell_of_5000_digits_is_an_ordinary_range_error(tmp_path: Path) -> None:
    """Before: "a cell cannot be read (ValueError: Exceeds the limit (4300 digits) for
    integer string conversion...)"."""
    huge = f'<c r="A2"><v>{"1" * 5000}</v></c>'
    rows = row(1, *HEADER) + f'<row r="2">{huge}{cell("B2", "up")}{cell("C2", TIME)}</row>'
    bad, good = outcomes(xlsx(tmp_path, sheet(rows + unit(3))))
    assert isinstance(bad, Rejected)
    assert bad.errors[0].type == "import_number_range"
    assert "unit_id: a number of over 300 digits is beyond +-2^53" in bad.reason
    assert len(bad.reason) < 200
    assert isinstance(good, Accepted)


@pytest.mark.parametrize("saved", ["2", "-1", "true"])
def test_a_boolean_cell_other_than_0_or_1_rejects_its_row(tmp_path: Path, saved: str) -> None:
    """openpyxl reads any integer under `t="b"` as a boolean: `2` became "true", a
    valid unit id, imported unseen."""
    boolean = (
        f'<row r="2"><c r="A2" t="b"><v>{saved}</v></c>'
        f'<c r="B2" t="inlineStr"><is><t>up</t></is></c>'
        f'<c r="C2" t="inlineStr"><is><t>{TIME}</t></is></c></row>'
    )
    got = outcomes(xlsx(tmp_path, sheet(row(1, *HEADER) + boolean + unit(3))))
    assert [(o.row, type(o).__name__) for o in got] == [(2, "Rejected"), (3, "Accepted")]
    bad = got[0]
    assert isinstance(bad, Rejected)
    assert bad.errors[0].msg == (
        f"cell A2 cannot be read (ValueError: boolean {saved!r} is neither 0 nor 1)"
    )
    assert json.loads(bad.raw)["status"] == "up"  # the row's other cells are kept


@pytest.mark.parametrize("empty", ['<c r="D2" t="b"/>', '<c r="D2" t="b"><v></v></c>'])
def test_a_boolean_cell_without_a_value_is_an_empty_cell(tmp_path: Path, empty: str) -> None:
    """A styled empty cell: the check for booleans other than 0 or 1 rejected its row
    ("boolean '' is neither 0 nor 1")."""
    rows = row(1, *HEADER, "note") + unit(2).replace("</row>", empty + "</row>")
    (got,) = outcomes(xlsx(tmp_path, sheet(rows)))
    assert isinstance(got, Accepted), got


@pytest.mark.parametrize(
    "unreadable",
    ['<c t="n"><v>nan</v></c>', '<c t="s"><v>-1</v></c>', '<c t="b"><v>2</v></c>'],
)
def test_an_unreadable_cell_without_a_reference_rejects_its_row_naming_the_next_column(
    tmp_path: Path, unreadable: str
) -> None:
    """A cell without `r` is the column after the one before it (as openpyxl counts);
    asking openpyxl for the column of an empty reference raised UnboundLocalError,
    which ended the whole import as an internal error."""
    first = f'<row r="2">{unreadable}{cell("B2", "up")}{cell("C2", TIME)}</row>'
    second = f'<row r="3">{cell("A3", "U-3")}{unreadable}{cell("C3", TIME)}</row>'
    got = outcomes(xlsx(tmp_path, sheet(row(1, *HEADER) + first + second + unit(4))))
    assert [(o.row, type(o).__name__) for o in got] == [
        (2, "Rejected"),
        (3, "Rejected"),
        (4, "Accepted"),
    ]
    assert got[0].errors[0].msg.startswith("cell A2 cannot be read (")  # type: ignore[union-attr]
    assert got[1].errors[0].msg.startswith("cell B3 cannot be read (")  # type: ignore[union-attr]
    assert json.loads(got[1].raw) == {"unit_id": "U-3", "status": None, "event_time": TIME}


def test_a_number_in_a_date_format_that_is_no_date_is_said_so_not_an_error_value(
    tmp_path: Path,
) -> None:
    """openpyxl reads 10,000,000 under `yyyy-mm-dd` as `#VALUE!`: the row was refused
    for an error value and told to fix a formula the file does not have."""
    from openpyxl import Workbook

    book = Workbook()
    sheet_ = book.active
    assert sheet_ is not None
    sheet_.append([*HEADER, "note"])
    sheet_.append(["U-2", "up", 10_000_000])
    sheet_.append(["U-3", "up", TIME, 10_000_000])  # a column the import does not read
    sheet_["C2"].number_format = sheet_["D3"].number_format = "yyyy-mm-dd"
    path = tmp_path / "units.xlsx"
    book.save(path)
    bad, good = outcomes(path)
    assert isinstance(bad, Rejected)
    assert bad.errors[0].msg.startswith(
        "cell C2 cannot be read as a date: it holds the number 10000000 in a date format"
    )
    assert json.loads(bad.raw)["event_time"] == 10_000_000
    assert isinstance(good, Accepted)


@pytest.mark.parametrize("kind", ["zz", "", "S"])
def test_a_cell_of_a_type_the_format_does_not_have_rejects_its_row(
    tmp_path: Path, kind: str
) -> None:
    """openpyxl read `<c t="zz"><v>U-3</v></c>` as the text U-3, imported unseen."""
    odd = unit(3).replace('<c r="A3" t="inlineStr"><is><t>U-3</t></is></c>', "")
    odd = odd.replace('<row r="3">', f'<row r="3"><c r="A3" t="{kind}"><v>U-3</v></c>')
    bad = only_row_3_rejected(
        outcomes(xlsx(tmp_path, sheet(row(1, *HEADER) + unit(2) + odd + unit(4))))
    )
    assert bad.errors[0].msg == f"cell A3 cannot be read (ValueError: unknown cell type {kind!r})"
    assert json.loads(bad.raw) == {"unit_id": None, "status": "up", "event_time": TIME}


@pytest.mark.parametrize(
    ("reference", "why"),
    [("B5", "names another row"), ("B0", "names another row"), ("B", "names no row")],
)
def test_a_cell_whose_reference_names_another_row_rejects_its_row(
    tmp_path: Path, reference: str, why: str
) -> None:
    """openpyxl takes a reference's column and ignores its row: `B5` inside row 3 was
    read as B3 (the status "down" of another row imported as row 3's), unseen; a
    reference without a row was "cannot be read (ValueError: invalid literal for
    int()...)" in whatever column came next."""
    odd = unit(3).replace('<c r="B3" t="inlineStr"><is><t>up</t></is></c>', "")
    odd = odd.replace("</row>", f'<c r="{reference}" t="inlineStr"><is><t>down</t></is></c></row>')
    got = outcomes(xlsx(tmp_path, sheet(row(1, *HEADER) + unit(2) + odd + unit(4))))
    bad = only_row_3_rejected(got)
    assert bad.errors[0].msg == (
        f"cell reference {reference!r} in row 3 {why} (the file is damaged)"
    )
    assert json.loads(bad.raw) == {"unit_id": "U-3", "status": None, "event_time": TIME}


def test_a_cell_reference_with_leading_zeros_names_its_own_row(tmp_path: Path) -> None:
    """openpyxl reads `A03` as A3: no reason to refuse it."""
    rows = row(1, *HEADER) + unit(2).replace('r="A2"', 'r="A02"')
    (got,) = outcomes(xlsx(tmp_path, sheet(rows)))
    assert isinstance(got, Accepted), got


def _strict_json(text: str | bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("number", ["1e400", "-1E400", "9" * 5000])
def test_the_dead_letter_of_a_number_past_the_float_range_is_json_keeping_its_text(
    tmp_path: Path, number: str
) -> None:
    """`raw` held `Infinity` (json.dumps' default), which no strict JSON parser reads:
    a consumer of the dead-letter topic failed on the letter instead of showing it."""
    import base64
    from datetime import UTC, datetime

    huge = f'<c r="A3"><v>{number}</v></c>'
    odd = unit(3).replace('<c r="A3" t="inlineStr"><is><t>U-3</t></is></c>', huge)
    bad = only_row_3_rejected(
        outcomes(xlsx(tmp_path, sheet(row(1, *HEADER) + unit(2) + odd + unit(4))))
    )
    assert bad.errors[0].type == "import_number_range"
    assert _strict_json(bad.raw) == {"unit_id": number, "status": "up", "event_time": TIME}
    letter = _strict_json(bad.dead_letter(datetime.now(UTC)).encode())
    assert _strict_json(base64.b64decode(letter["value_b64"]))["unit_id"] == number


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "shape",
    [
        # CPU-bound in chainwatch/importer (not measured): 9.9-11.5 s under the tracer, 6.6 s
        # without; its lines of schemas/ are covered by the other imports of this file
        pytest.param("many cells", marks=pytest.mark.no_cover),
        "one huge cell",
        "one huge cell, no dimension",
    ],
)
def test_a_row_past_1_mib_of_xml_is_rejected_in_bounded_memory_and_the_import_goes_on(
    tmp_path: Path, shape: str
) -> None:
    """A row was built whole before it was looked at: 24 MB of one cell's text (or a
    million cells) were held, bounded by the sheet's 2 GB only. A sheet without a
    `<dimension>` (many writers leave it out) was parsed whole by openpyxl at open,
    to look for one, before the import's reader started."""
    import base64
    import random

    rng = random.Random(7)  # not to be compressed past the zip bomb ratio
    if shape == "many cells":
        # 250,000 cells, 6.7 MB of XML: held whole they were ~250 MB, four times the bound
        # below; the reader's peak is the same as a million cells' (what it holds stops
        # growing at the row's first MiB), which took another ~6 s to read past
        filler = "".join(f'<c r="D3"><v>{rng.randrange(10**6)}</v></c>' for _ in range(250_000))
    else:
        text = base64.b64encode(rng.randbytes(18_000_000)).decode()  # 24 MB
        filler = f'<c r="D3" t="inlineStr"><is><t>{text}</t></is></c>'
        del text
    huge = unit(3).replace("</row>", filler + "</row>")
    xml = sheet(row(1, *HEADER) + unit(2) + huge + unit(4))
    if shape.endswith("no dimension"):
        xml = xml.replace('<dimension ref="A1:C1"/>', "")
    path = xlsx(tmp_path, xml)
    del filler, huge, xml
    with peak_memory() as peak:
        got = outcomes(path)
    bad = only_row_3_rejected(got)
    assert bad.errors[0].type == "import_row_too_long"
    assert bad.errors[0].msg.startswith("the row is more than 1,048,576 bytes of sheet XML")
    assert json.loads(bad.raw) == {"unit_id": "U-3", "status": "up", "event_time": TIME}
    # 1 MiB of XML of tiny cells is ~40,000 cells, ~40 MB as elements; before, a
    # million cells were ~1 GB (and a minute), the one cell's 24 MB held twice
    assert peak.bytes < (64_000_000 if shape == "many cells" else 12_000_000), peak.bytes


def test_links_to_other_workbooks_are_not_loaded(tmp_path: Path) -> None:
    """openpyxl parsed each external link's cached cells whole at open and kept them:
    a 6 MB part (0.7 MB of file) peaked at 111 MB and held 47 MB for the whole
    import; the parts may be 32 MB each, and many. No row reads them."""
    from chainwatch.importer.xlsx import open_book

    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    cells = "".join(
        f'<row r="{i}"><cell r="A{i}" t="str"><v>value {i}</v></cell></row>'
        for i in range(1, 50_001)
    )
    link = (
        f'<externalLink xmlns="{MAIN}" xmlns:r="{rel}"><externalBook r:id="rId1"><sheetNames>'
        f'<sheetName val="S"/></sheetNames><sheetDataSet><sheetData sheetId="0">{cells}'
        "</sheetData></sheetDataSet></externalBook></externalLink>"
    )
    link_rels = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{rel}/externalLinkPath" Target="other.xlsx" '
        'TargetMode="External"/></Relationships>'
    )
    path = xlsx(tmp_path, sheet(row(1, *HEADER) + unit(2)))
    with zipfile.ZipFile(path) as book:
        workbook = book.read("xl/workbook.xml").decode()
        relations = book.read("xl/_rels/workbook.xml.rels").decode()
        types = book.read("[Content_Types].xml").decode()
    path = xlsx(
        tmp_path,
        sheet(row(1, *HEADER) + unit(2)),
        **{
            "xl/workbook.xml": workbook.replace(
                "</sheets>",
                '</sheets><externalReferences><externalReference r:id="rIdL"/>'
                "</externalReferences>",
            ),
            "xl/_rels/workbook.xml.rels": relations.replace(
                "</Relationships>",
                f'<Relationship Id="rIdL" Type="{rel}/externalLink" '
                'Target="externalLinks/externalLink1.xml"/></Relationships>',
            ),
            "[Content_Types].xml": types.replace(
                "</Types>",
                '<Override PartName="/xl/externalLinks/externalLink1.xml" ContentType="application/'
                'vnd.openxmlformats-officedocument.spreadsheetml.externalLink+xml"/></Types>',
            ),
            "xl/externalLinks/externalLink1.xml": link,
            "xl/externalLinks/_rels/externalLink1.xml.rels": link_rels,
        },
    )
    with peak_memory() as peak:
        book = open_book(path)
    book.close()
    assert peak.bytes < 2_000_000, peak.bytes
    assert outcomes(path)[0].row == 2  # the workbook is still read


def test_a_utf16_sheet_rejects_a_row_past_1_mib_and_reads_the_rows_after_it(
    tmp_path: Path,
) -> None:
    """Its end tag was searched for in UTF-8 bytes and never found: the import stopped
    ("the sheet ends inside the row") instead of rejecting the one row."""
    import base64
    import random

    text = base64.b64encode(random.Random(7).randbytes(450_000)).decode()  # no zip bomb
    huge = unit(3).replace("</row>", cell("D3", text) + "</row>")  # 1.2 MB in UTF-16
    xml = sheet(row(1, *HEADER) + unit(2) + huge + unit(4))
    xml = xml.replace('encoding="UTF-8"', 'encoding="UTF-16"')
    bad = only_row_3_rejected(outcomes(xlsx(tmp_path, xml.encode("utf-16"))))
    assert bad.errors[0].type == "import_row_too_long"
