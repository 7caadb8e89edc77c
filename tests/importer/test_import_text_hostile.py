"""CSV, NDJSON, mappings and outputs built to hurt: deep nesting, huge headers, numbers
a float cannot hold, a rejects file that is the input, codecs that are no text encoding."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from import_outcomes import import_outcomes

from chainwatch.errors import UsageError
from chainwatch.importer.mapper import RowMapper
from chainwatch.importer.outputs import RejectsWriter, ScenarioWriter
from chainwatch.importer.pipeline import Accepted, Importer, Rejected
from chainwatch.importer.run import open_tables
from chainwatch.importer.tables import ImportFailed, open_table
from schemas.import_mapping import ImportMapping, MappingError, load_mapping
from schemas.plan import load_plan
from schemas.topics import ORDERS
from schemas.validation import RecordRejected, decode_input

PLAN = load_plan()
UNIT = '{"unit_id": %s, "status": "up", "event_time": "2026-11-23T09:30:00Z"}'


def run(kind: str, path: Path, mapping: ImportMapping | None = None) -> list[Accepted | Rejected]:
    return import_outcomes(kind, path, mapping)


def test_ndjson_integers_beyond_2_53_are_rejected_not_turned_into_id_strings(
    tmp_path: Path,
) -> None:
    path = tmp_path / "units.ndjson"
    path.write_text("\n".join([UNIT % "1180591620717411303424", UNIT % '"4101"']) + "\n")
    bad, good = run("unit-status", path)
    assert isinstance(bad, Rejected)
    assert bad.errors[0].type == "import_number_range"
    assert isinstance(good, Accepted)
    assert json.loads(good.value)["unit_id"] == "4101"


ORDER: dict[str, object] = {
    "op": "created",
    "order_id": "O-1",
    "customer_id": "C-1",
    "product": "p",
    "quantity": 5,
    "placed_at": "2027-03-01T09:00:00Z",
    "due_at": "2027-03-10T09:00:00Z",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_id", 12),
        ("customer_id", True),
        ("product", 1.5),
        ("product", {"a": 1}),
        ("product", ["p"]),
        ("quantity", "5"),
        ("quantity", True),
        ("placed_at", 1_700_000_000),
        ("route", "knitting > dyeing"),
        ("route", ["knitting", 7]),
        ("order_id", " O-1 "),
    ],
)
def test_an_ndjson_value_the_gateway_refuses_is_refused_by_the_import_with_its_error(
    tmp_path: Path, field: str, value: object
) -> None:
    """`"order_id": 12` was imported as "12", `"quantity": "5"` as 5: records the
    gateway refuses passed the import. The import now refuses them with the error
    the gateway gives for the same record."""
    record = {**ORDER, field: value}
    with pytest.raises(RecordRejected) as gateway:
        decode_input(ORDERS, json.dumps(record).encode(), plan=PLAN, key=b"O-1")
    path = tmp_path / "orders.ndjson"
    path.write_text(json.dumps(record) + "\n" + json.dumps(ORDER) + "\n")
    bad, good = run("orders", path)
    assert isinstance(bad, Rejected)
    expected = [(e.loc, e.type) for e in gateway.value.errors]
    assert [(e.loc, e.type) for e in bad.errors] == expected
    assert isinstance(good, Accepted)


def test_an_ndjson_lone_surrogate_is_not_json_as_on_every_other_path(tmp_path: Path) -> None:
    """It was `validation_failed` with the encoder's message ("'utf-8' codec can't
    encode character"); the gateway and the engine call it `not_json`."""
    path = tmp_path / "units.ndjson"
    path.write_text(UNIT % '"U-\\ud800"' + "\n" + UNIT % '"U-1"' + "\n")
    bad, good = run("unit-status", path)
    assert isinstance(bad, Rejected)
    assert bad.reason_code.value == "not_json"
    assert (
        bad.errors[0].msg == "a string holds a lone surrogate (\\ud800), which is not Unicode text"
    )
    assert isinstance(good, Accepted)


def test_an_ndjson_line_nested_too_deeply_is_a_bad_row_and_the_import_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "units.ndjson"
    path.write_text("[" * 200_000 + "\n" + UNIT % '"U-1"' + "\n")
    deep, good = run("unit-status", path)
    assert isinstance(deep, Rejected)
    assert deep.row == 1
    assert "nested too deeply" in deep.reason
    assert isinstance(good, Accepted)


def test_a_csv_attributes_cell_nested_too_deeply_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "scans.csv"
    head = "event_id,order_id,unit_id,stage,action,event_time,attributes\n"
    good = 'e-2,PO-1,U-1,knitting,started,2026-11-23T09:30:00Z,"{""shade"": ""navy""}"\n'
    deep = f"e-1,PO-1,U-1,knitting,started,2026-11-23T09:30:00Z,{'[' * 50_000}\n"
    path.write_text(head + deep + good)
    deep, fine = run("scans", path)
    assert isinstance(deep, Rejected)
    assert "nested too deeply" in deep.reason
    assert isinstance(fine, Accepted), fine


def test_a_csv_header_over_the_field_limit_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "units.csv"
    path.write_text('"' + "x" * 200_000 + '",status\nU-1,up\n')
    with pytest.raises(ImportFailed) as caught:
        open_table(path, ImportMapping())
    assert "header row 1 cannot be read" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_column_error_names_a_bounded_number_of_columns(tmp_path: Path) -> None:
    path = tmp_path / "units.csv"
    path.write_text(",".join(f"column number {n}" for n in range(40_000)) + "\n")
    importer = Importer(RowMapper(ImportMapping(), "unit-status"), PLAN)
    with pytest.raises(ImportFailed) as caught:
        open_tables([path], ImportMapping(), importer)
    message = str(caught.value)
    assert "no column for the required field unit_id" in message
    assert "'column number 0'" in message
    assert "and 39970 more" in message
    assert len(message) < 2_000


def test_a_csv_header_longer_than_any_line_can_be_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "units.csv"
    path.write_text("preamble " * 200_000 + "\n" + "unit_id," * 200_000 + "\nU-1\n")
    with pytest.raises(ImportFailed) as caught:
        open_table(path, ImportMapping(header_row=2))
    assert "header row 2 is 1,600,000 bytes, longer than a header can be" in str(caught.value)


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_rejects_or_out_naming_an_input_file_is_refused_and_the_input_kept(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "units.csv"
    text = "unit_id,status,event_time\nU-1,up,2026-11-23T09:30:00Z\n"
    path.write_text(text)
    target = tmp_path / "rejects.ndjson"
    if how == "same":
        target = path
    elif how == "symlink":
        target.symlink_to(path)
    else:
        os.link(path, target)
    with open_table(path, ImportMapping()) as table:
        inputs = {table.identity}
        # the options' fault, not the file's: a usage error (exit 2)
        with pytest.raises(UsageError) as caught:
            RejectsWriter(target, inputs)
        assert "is one of the files to import" in str(caught.value)
        with pytest.raises(UsageError):
            ScenarioWriter(str(target), inputs)
        assert path.read_text() == text
        RejectsWriter(tmp_path / "elsewhere.ndjson", inputs).close()  # another file is fine


@pytest.mark.timeout(10)
def test_out_that_is_a_device_or_a_pipe_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    """The scenario is renamed over `--out` when done: `/dev/null` would become a file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    device = tmp_path / "null"
    device.symlink_to("/dev/null")
    for target in (fifo, device):
        with pytest.raises(ImportFailed, match="is not a regular file"):
            ScenarioWriter(str(target))
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)
    assert list(tmp_path.glob(".*.tmp")) == []


@pytest.mark.parametrize("codec", ["base64", "rot13", "zlib", "hex", "undefined"])
def test_a_codec_that_is_no_text_encoding_is_a_mapping_error(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(f"csv: {{encoding: {codec}}}\n")
    with pytest.raises(MappingError) as caught:
        load_mapping(path, "scans")
    assert f"'{codec}' is not a text encoding" in str(caught.value)


@pytest.mark.parametrize("codec", ["utf-8", "cp1252", "utf-16", "latin-1"])
def test_text_encodings_stay_valid(codec: str) -> None:
    assert ImportMapping.model_validate({"csv": {"encoding": codec}}).csv.encoding == codec


@pytest.mark.parametrize(
    ("time", "complaint"),
    [
        ("{timezone: America}", "unknown time zone 'America'"),  # a folder of zones
        ("{timezone: Europe/" + "x" * 5000 + "}", "unknown time zone 'Europe/xxx"),
        ("{timezone: " + "x" * 300 + "}", "unknown time zone"),
        ("{format: '%d.%m.%Y %d'}", "is not a usable strptime pattern"),  # a re.error before
    ],
)
def test_a_mapping_s_bad_zone_or_format_is_a_mapping_error(
    tmp_path: Path, time: str, complaint: str
) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(f"time: {time}\n")
    with pytest.raises(MappingError, match=re.escape(complaint)) as caught:
        load_mapping(path, "scans")
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("quantity", ["1" * 5000, "-" + "1" * 5000, "1" * 5000 + ".5", "1e400"])
def test_a_csv_quantity_of_thousands_of_digits_is_an_ordinary_range_error(
    tmp_path: Path, quantity: str
) -> None:
    """Before: "processing_error: ValueError: Exceeds the limit (4300 digits) for integer
    string conversion..." (or, past a decimal point, a float error from the JSON encoder)."""
    path = tmp_path / "scans.csv"
    head = "event_id,order_id,unit_id,stage,action,event_time,quantity,uom\n"
    scan = "e-{},PO-1,U-1,knitting,started,2026-11-23T09:30:00Z,{},kg\n"
    path.write_text(head + scan.format(1, quantity) + scan.format(2, "212.5"))
    bad, good = run("scans", path)
    assert isinstance(bad, Rejected)
    assert [(e.loc, e.type) for e in bad.errors] == [("quantity", "import_number_range")]
    assert "is beyond +-2^53" in bad.reason
    assert len(bad.reason) < 200
    assert isinstance(good, Accepted)


@pytest.mark.parametrize("number", ["1e400", "9" * 5000, "-" + "9" * 400])
def test_an_ndjson_number_past_the_float_range_is_a_range_error(
    tmp_path: Path, number: str
) -> None:
    """`1e400` parses as infinity: before, "numbers must be finite (no NaN or Infinity)".
    An integer of thousands of digits was a `not_json` line whose reason told the user
    to call Python's `sys.set_int_max_str_digits()`."""
    path = tmp_path / "units.ndjson"
    path.write_text(UNIT % number + "\n")
    (bad,) = run("unit-status", path)
    assert isinstance(bad, Rejected)
    assert bad.errors[0].type == "import_number_range"
    assert "a number of over 300 digits is beyond +-2^53" in bad.reason
    assert len(bad.reason) < 200
    assert bad.raw == (UNIT % number).encode()  # the line as written: JSON, no `Infinity`


def test_a_mapping_default_is_converted_as_for_csv_in_an_ndjson_row(tmp_path: Path) -> None:
    """The mapping's `customer_id: 1001` (a YAML int) was kept as a JSON 1001 for NDJSON
    rows lacking the field, so every such row was refused as `string_type`; CSV gave
    "1001". A default is the mapping's value, not the file's."""
    mapping = ImportMapping.model_validate({"defaults": {"customer_id": 1001, "quantity": "5"}})
    lacking = {k: v for k, v in ORDER.items() if k not in ("customer_id", "quantity")}
    ndjson = tmp_path / "orders.ndjson"
    ndjson.write_text(json.dumps(lacking) + "\n")
    csv = tmp_path / "orders.csv"
    csv.write_text(",".join(lacking) + "\n" + ",".join(map(str, lacking.values())) + "\n")
    for path in (ndjson, csv):
        (got,) = run("orders", path, mapping)
        assert isinstance(got, Accepted), got
        value = json.loads(got.value)
        assert (value["customer_id"], value["quantity"]) == ("1001", 5)


def test_a_value_map_maps_ndjson_numbers_and_booleans_as_it_maps_csv_cells(
    tmp_path: Path,
) -> None:
    """`values: {status: {1: up, 0: down}}` was ignored for `"status": 1` (refused as
    an enum) while CSV mapped it; a value the map does not list keeps its JSON type.
    A target is not looked up again (0 is down, though the map lists down too)."""
    mapping = ImportMapping.model_validate(
        {"values": {"status": {1: "up", 0: "down", "true": "up", "down": "up"}}}
    )
    statuses = [1, 0, 1.0, True, 2]
    path = tmp_path / "units.ndjson"
    lines = [(UNIT % '"U-1"').replace('"up"', json.dumps(s)) for s in statuses]
    path.write_text("\n".join(lines) + "\n")
    got = run("unit-status", path, mapping)
    mapped = [json.loads(o.value)["status"] for o in got[:4]]  # type: ignore[union-attr]
    assert mapped == ["up", "down", "up", "up"]
    unlisted = got[4]
    assert isinstance(unlisted, Rejected)
    assert [(e.loc, e.type) for e in unlisted.errors] == [("status", "enum")]


def test_the_stage_map_maps_ndjson_route_numbers_as_it_maps_a_csv_route(
    tmp_path: Path,
) -> None:
    """`"route": [1, 2]` with `values: {stage: {1: knitting, 2: dyeing}}` kept the
    numbers (refused as string_type) while a CSV route `1 > 2` was mapped."""
    mapping = ImportMapping.model_validate({"values": {"stage": {1: "knitting", 2: "dyeing"}}})
    path = tmp_path / "orders.ndjson"
    path.write_text(json.dumps({**ORDER, "route": [1, 2, "shipping"]}) + "\n")
    (got,) = run("orders", path, mapping)
    assert isinstance(got, Accepted), got
    assert json.loads(got.value)["route"] == ["knitting", "dyeing", "shipping"]
