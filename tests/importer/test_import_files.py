"""Reading the files: CSV, XLSX and NDJSON rows with their row numbers, through the
contract validation, into lines `chainwatch replay` reads."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from chainwatch.importer.mapper import RowMapper
from chainwatch.importer.outputs import ScenarioWriter
from chainwatch.importer.pipeline import Accepted, Importer, Rejected
from chainwatch.importer.run import import_to_file, open_tables
from chainwatch.importer.tables import ImportFailed, open_table
from schemas.import_mapping import ImportMapping, load_mapping
from schemas.plan import load_plan
from schemas.validation import decode_input, decode_replay_line

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "import"
PLAN = load_plan()


def importer(kind: str, mapping: ImportMapping) -> Importer:
    return Importer(RowMapper(mapping, kind), PLAN)


def run(kind: str, mapping: ImportMapping, *paths: Path) -> list[Accepted | Rejected]:
    imp = importer(kind, mapping)
    tables = open_tables(list(paths), mapping, imp)
    try:
        return [o for t in tables for o in imp.outcomes(t)]
    finally:
        for t in tables:
            t.close()


def example(name: str, kind: str, suffix: str = "csv") -> list[Accepted | Rejected]:
    mapping = load_mapping(EXAMPLES / f"{name}.mapping.yaml", kind)
    return run(kind, mapping, EXAMPLES / f"{name}.{suffix}")


def test_the_scans_example_maps_german_headers_local_times_and_decimal_commas() -> None:
    outcomes = example("scans", "scans")
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    assert len(accepted) == 6
    dyed = json.loads(accepted[3].value)
    assert dyed["stage"] == "dyeing"
    assert dyed["action"] == "completed"
    assert dyed["event_time"] == "2027-03-04T01:00:00+01:00"
    assert dyed["quantity"] == 512.5
    assert dyed["attributes"] == {"shade": "navy"}
    assert dyed["event_id"].startswith("imp-")
    assert accepted[3].key == "PO-4101"
    assert accepted[3].row == 5


def test_bad_rows_are_reported_with_file_row_and_reason() -> None:
    rejected = [o for o in example("scans", "scans") if isinstance(o, Rejected)]
    assert [(r.file, r.row) for r in rejected] == [("scans.csv", 8), ("scans.csv", 9)]
    assert rejected[0].reason.startswith("validation_failed: stage:")
    assert "'03.03.2027 25:00' matches none of the time formats" in rejected[1].reason
    assert rejected[1].raw == b"PO-4102;Garneinkauf;Ende;YARN-01;03.03.2027 25:00;130;kg;LOT-91;"
    letter = rejected[1].dead_letter(__import__("datetime").datetime.now().astimezone())
    assert letter.source.kind == "import"
    assert (letter.source.file, letter.source.line) == ("scans.csv", 9)
    assert letter.key_b64 is not None  # the order id, to find the row's order


def test_the_xlsx_example_reads_a_named_sheet_below_a_title_row() -> None:
    outcomes = example("unit_status", "unit-status", "xlsx")
    assert [(o.row, type(o).__name__) for o in outcomes] == [
        (3, "Accepted"),
        (4, "Accepted"),
        (5, "Accepted"),
        (6, "Rejected"),
    ]
    down = json.loads(outcomes[0].value)  # type: ignore[union-attr]
    assert down["status"] == "down"
    assert down["reason"] == "machine_breakdown"
    assert down["event_time"] == "2027-03-04T10:30:00+01:00"
    assert down["expected_up_at"] == "2027-03-04T22:00:00+01:00"
    text_cell = json.loads(outcomes[2].value)  # type: ignore[union-attr]
    assert text_cell["event_time"] == "2027-03-05T07:00:00+01:00"


def test_the_orders_example_reads_thousands_separators() -> None:
    outcomes = example("orders", "orders")
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert [json.loads(o.value)["quantity"] for o in outcomes] == [500, 1200]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "kind", "suffix"),
    [
        ("scans", "scans", "csv"),
        ("orders", "orders", "csv"),
        ("unit_status", "unit-status", "xlsx"),
    ],
)
def test_every_written_line_is_a_scenario_line_replay_accepts_and_re_import_is_identical(
    tmp_path: Path, name: str, kind: str, suffix: str
) -> None:
    mapping = load_mapping(EXAMPLES / f"{name}.mapping.yaml", kind)
    outputs = []
    for attempt in range(2):
        out = tmp_path / f"{attempt}.ndjson"
        imp = importer(kind, mapping)
        tables = open_tables([EXAMPLES / f"{name}.{suffix}"], mapping, imp)
        import_to_file(imp, tables, ScenarioWriter(str(out)), lambda _r: None)
        for t in tables:
            t.close()
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]  # same ids, same bytes: re-importing is a no-op
    lines = outputs[0].splitlines()
    assert lines
    for line in lines:
        replay = decode_replay_line(line)
        decode_input(replay.topic, replay.value_bytes(), plan=PLAN, key=replay.key_bytes())
    assert list(tmp_path.glob(".*.tmp")) == []


def test_csv_rows_keep_the_line_they_start_on_and_a_shifted_row_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "scans.csv"
    path.write_text(
        "order_id,stage,action,unit_id,event_time,attributes\n"
        'PO-1,dyeing,started,D-1,2026-11-22T14:05:00Z,"{""note"":\n""two lines""}"\n'
        "\n"
        "PO-1,dyeing,completed,D-1,2026-11-22T16:05:00Z,,212,5\n"
        "PO-1,dyeing,completed,D-1,2026-11-22T18:05:00Z,,,\n",
        encoding="utf-8",
    )
    outcomes = run("scans", ImportMapping(), path)
    assert [(o.row, type(o).__name__) for o in outcomes] == [
        (2, "Accepted"),
        (5, "Rejected"),
        (6, "Accepted"),  # trailing empty cells are fine
    ]
    assert json.loads(outcomes[0].value)["attributes"] == {"note": "two lines"}  # type: ignore[union-attr]
    assert "the row has 8 cells, the header 6 columns" in outcomes[1].reason  # type: ignore[union-attr]


def test_the_delimiter_is_detected_and_a_bom_is_not_part_of_the_first_header(
    tmp_path: Path,
) -> None:
    path = tmp_path / "units.csv"
    path.write_bytes(
        "\ufeffunit_id;status;event_time\nKNIT-02;down;2026-11-23T09:30:00Z\n".encode()
    )
    (outcome,) = run("unit-status", ImportMapping(), path)
    assert isinstance(outcome, Accepted), outcome


def test_ndjson_lines_that_are_not_objects_are_bad_rows_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "customers.ndjson"
    path.write_text(
        '{"customer_id": "C-7", "name": "Nordic Knits AB", "tier": "gold", "crm_score": 3}\n'
        "\n"
        "[1, 2]\n"
        '{"customer_id": "C-8", "name": \n'
        '{"customer_id": "C-9", "name": "X", "tier": "bronze"}\n'
        '{"customer_id": "C-10", "name": "Y", "tier": "gold", "n": NaN}\n',
        encoding="utf-8",
    )
    outcomes = run("customers", ImportMapping(), path)
    summary = [(o.row, o.reason_code.value if isinstance(o, Rejected) else "ok") for o in outcomes]
    assert summary == [
        (1, "ok"),
        (3, "not_object"),
        (4, "not_json"),
        (5, "validation_failed"),
        (6, "not_json"),
    ]
    assert json.loads(outcomes[0].value)["crm_score"] == 3  # type: ignore[union-attr]


def test_an_ndjson_line_that_writes_a_key_twice_is_refused_at_that_key(tmp_path: Path) -> None:
    """Python's parser kept the last `tier` and the record was re-encoded with it: the
    same line posted to the gateway or produced to Kafka is refused (`duplicate_key`)."""
    path = tmp_path / "customers.ndjson"
    path.write_text(
        '{"customer_id": "C-7", "name": "N", "tier": "gold", "tier": "platinum"}\n'
        '{"customer_id": "C-8", "name": "N", "tier": "gold", "x": {"k": 1, "k": 2}}\n'
        '{"customer_id": "C-9", "name": "N", "tier": "gold", "x": [{"k": 1}, {"k": 2}]}\n',
        encoding="utf-8",
    )
    outcomes = run("customers", ImportMapping(), path)
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    assert [(o.row, o.reason_code.value) for o in rejected] == [
        (1, "validation_failed"),
        (2, "validation_failed"),
    ]
    assert [(o.errors[0].loc, o.errors[0].type) for o in rejected] == [
        ("tier", "duplicate_key"),
        ("x.k", "duplicate_key"),
    ]
    assert all(o.errors[0].msg.endswith("so write it once") for o in rejected)  # not "send"
    assert isinstance(outcomes[2], Accepted)


def test_a_line_nested_at_the_parsers_depth_is_a_bad_row_not_a_failed_import(
    tmp_path: Path,
) -> None:
    """The repeated-key check parses each line again, its hook a frame deeper than the
    first parse: a line just within the first parser's depth must not stop the import."""
    limit = sys.getrecursionlimit()
    path = tmp_path / "customers.ndjson"
    path.write_text(
        "".join(
            f'{{"customer_id": "C-{n}", "name": "N", "x": {"[" * n}{{}}{"]" * n}}}\n'
            for n in range(limit - 200, limit)
        ),
        encoding="utf-8",
    )
    outcomes = run("customers", ImportMapping(), path)
    assert len(outcomes) == 200
    assert {o.reason_code.value for o in outcomes if isinstance(o, Rejected)} <= {
        "not_json",
        "validation_failed",
    }


def test_file_level_problems_stop_the_import_before_any_row(tmp_path: Path) -> None:
    cp1252 = tmp_path / "old.csv"
    cp1252.write_bytes("order_id;stage\nPO-1;F\xe4rberei\n".encode("cp1252"))
    with pytest.raises(ImportFailed, match=r"not utf-8-sig text .*csv.encoding"):
        open_table(cp1252, ImportMapping())
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")  # a BIFF workbook's start
    with pytest.raises(ImportFailed, match=r"\.xls format is not read"):
        open_table(tmp_path / "old.xls", ImportMapping())
    with pytest.raises(ImportFailed, match="no such file"):
        open_table(tmp_path / "nope.csv", ImportMapping())
    (tmp_path / "dir.csv").mkdir()  # before: "no such file", as for a typo
    with pytest.raises(ImportFailed, match=r"dir\.csv: is a directory, not a file"):
        open_table(tmp_path / "dir.csv", ImportMapping())
    (tmp_path / "exports").mkdir()  # before: "cannot tell the format from the name"
    with pytest.raises(ImportFailed, match=r"exports: is a directory, not a file"):
        open_table(tmp_path / "exports", ImportMapping())
    os.mkfifo(tmp_path / "pipe.ndjson")
    with pytest.raises(ImportFailed, match=r"pipe\.ndjson: is not a regular file \(a pipe"):
        open_table(tmp_path / "pipe.ndjson", ImportMapping())
    mapping = ImportMapping(sheet="Tabelle1")
    with pytest.raises(ImportFailed, match=r"no sheet 'Tabelle1' \(sheets: Störungen\)"):
        open_table(EXAMPLES / "unit_status.xlsx", mapping)


def test_a_mapped_column_missing_from_the_header_is_an_error_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "scans.csv"
    path.write_text("Auftrag;Stufe\nPO-1;dyeing\n", encoding="utf-8")
    mapping = ImportMapping(columns={"order_id": "Auftrag", "event_time": "Zeit"})
    with pytest.raises(ImportFailed) as caught:
        open_tables([path], mapping, importer("scans", mapping))
    message = str(caught.value)
    assert "no column 'Zeit' (mapped to event_time)" in message
    assert "no column for the required field unit_id" in message
    assert "(columns: 'Auftrag', 'Stufe')" in message


@pytest.mark.parametrize(
    ("header", "kind", "named"),
    [
        ("order_id,unit_id,stage,action,event_time,order_id", "scans", "'order_id' appears 2"),
        ("order_id,unit_id,stage,action,event_time,Order  ID", "scans", None),  # not a repeat
        ("order_id,unit_id,stage,action,event_time,ORDER_ID", "scans", "'order_id' appears 2"),
        ("order_id,unit_id,stage,action,event_time,note,note", "scans", None),  # not read
        ("customer_id,name,tier,region,Region", "customers", "'region' appears 2"),
    ],
)
def test_a_column_named_twice_stops_the_import_instead_of_one_winning_unseen(
    tmp_path: Path, header: str, kind: str, named: str | None
) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(header + "\n", encoding="utf-8")
    mapping = ImportMapping()
    if named is None:
        open_tables([path], mapping, importer(kind, mapping))[0].close()
        return
    with pytest.raises(ImportFailed, match=named):
        open_tables([path], mapping, importer(kind, mapping))


def test_xlsx_row_numbers_are_sheet_rows_also_across_empty_rows(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["unit_id", "status", "event_time"])
    sheet.append(["U-1", "up", "2026-11-23T09:30:00Z"])
    sheet["A5"], sheet["B5"], sheet["C5"] = "U-2", "sideways", "2026-11-23T09:30:00Z"
    path = tmp_path / "units.xlsx"
    book.save(path)
    outcomes = run("unit-status", ImportMapping(), path)
    assert [(o.row, type(o).__name__) for o in outcomes] == [(2, "Accepted"), (5, "Rejected")]


def test_a_re_imported_bad_row_gets_the_same_dead_letter_id() -> None:
    from datetime import UTC, datetime

    ids = [
        [
            o.dead_letter(datetime.now(UTC)).dead_letter_id
            for o in outcomes
            if isinstance(o, Rejected)
        ]
        for outcomes in (example("scans", "scans"), example("scans", "scans"))
    ]
    assert len(ids[0]) == 2
    assert ids[0] == ids[1]


def test_a_file_the_import_may_not_read_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `internal error: PermissionError ...`, read as a bug of the import."""
    from chainwatch.importer import tables

    def denied(path: Path, encoding: str) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(tables, "_check_encoding", denied)
    path = tmp_path / "locked.csv"
    path.write_text("order_id\nPO-1\n")
    with pytest.raises(ImportFailed, match=r"locked\.csv: cannot read it \(Permission denied\)"):
        open_table(path, ImportMapping())


def test_a_utf16_export_is_named_as_such_and_reads_with_the_encoding_it_names(
    tmp_path: Path,
) -> None:
    """Excel's "Unicode Text" (UTF-16, tabs). Before: "set csv.encoding ..., e.g. cp1252",
    which reads every other byte as a NUL."""
    path = tmp_path / "units.txt"
    text = "unit_id\tstatus\tevent_time\nU-1\tup\t2026-11-23T09:30:00Z\n"
    path.write_bytes(text.encode("utf-16"))  # with its byte order mark
    with pytest.raises(ImportFailed, match=r"UTF-16 text .* set csv\.encoding: utf-16"):
        open_table(path, ImportMapping())
    with open_table(path, ImportMapping.model_validate({"csv": {"encoding": "utf-16"}})) as table:
        assert table.header == ["unit_id", "status", "event_time"]


def test_a_written_scenario_has_the_umasks_mode_and_is_on_the_disk_before_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mkstemp made every scenario 0600 whatever the umask, and the rename came with no
    fsync before it (a crash soon after could keep an empty file in its place)."""
    from chainwatch.importer import outputs

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        outputs.os, "replace", lambda *a: (calls.append("replace"), real_replace(*a))[1]
    )
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    before = os.umask(0o027)
    try:
        writer = ScenarioWriter(str(tmp_path / "out.ndjson"))
        writer.commit()
    finally:
        os.umask(before)
    assert oct((tmp_path / "out.ndjson").stat().st_mode & 0o777) == oct(0o640)
    assert calls[:2] == ["fsync", "replace"]
