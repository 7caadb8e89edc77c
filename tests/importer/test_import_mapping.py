"""The mapping file: the examples load, and every mistake is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.import_mapping import ImportMapping, MappingError, load_mapping

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "import"


@pytest.mark.parametrize(
    ("name", "kind"),
    [("scans", "scans"), ("orders", "orders"), ("unit_status", "unit-status")],
)
def test_the_example_mappings_load_for_their_kind(name: str, kind: str) -> None:
    mapping = load_mapping(EXAMPLES / f"{name}.mapping.yaml", kind)
    assert mapping.kind == kind
    assert mapping.time.timezone == "Europe/Berlin"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("colums: {order_id: A}\n", "scans", "colums: unknown key"),
        ("columns: {shade: Farbe}\n", "scans", "columns.shade: not a field of scans"),
        ("time: {timezone: Europe/Berln}\n", "scans", "unknown time zone 'Europe/Berln'"),
        ("time: {format: 'dd.mm.yyyy'}\n", "scans", "neither `iso` nor a strptime pattern"),
        ("time: {ambiguous: maybe}\n", "scans", "time.ambiguous: 'maybe'"),
        ("values: {action: {Start: begun}}\n", "scans", "values.action.Start: 'begun' is not"),
        ("values: {stage: {Färberei: Dyeing}}\n", "scans", "'Dyeing' is not a stage name"),
        ("attributes: {shade: Farbe}\n", "orders", "attributes: only scans have attributes"),
        ("kind: orders\n", "scans", "is for kind orders, not scans"),
        ("numbers: {decimal: ',', thousands: ','}\n", "scans", "must differ"),
        ("csv: {encoding: klingon}\n", "scans", "unknown text encoding 'klingon'"),
        ("csv: {delimiter: '\"'}\n", "scans", "csv.delimiter: '\"' cannot be the delimiter"),
        ('csv: {delimiter: "\\n"}\n', "scans", "csv.delimiter: '\\n' cannot be the delimiter"),
        ('csv: {delimiter: "\\r"}\n', "scans", "csv.delimiter: '\\r' cannot be the delimiter"),
        ("columns: [a, b]\n", "scans", "columns: Input should be a valid dictionary"),
        ("columns: {order_id: [unclosed\n", "scans", "is not valid YAML"),
        ("- a\n- b\n", "scans", "must be a YAML mapping of keys"),
    ],
)
def test_a_bad_mapping_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, kind: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as caught:
        load_mapping(path, kind)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message, message


def test_yes_no_on_off_stay_text_so_they_can_be_mapped(tmp_path: Path) -> None:
    path = write(tmp_path, "values: {status: {on: up, off: down, yes: up, Ein: up}}\n")
    mapping = load_mapping(path, "unit-status")
    assert mapping.values["status"] == {"on": "up", "off": "down", "yes": "up", "Ein": "up"}


def test_numeric_map_keys_match_the_cell_text(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, "values: {action: {1: started, 2: completed}}\n"))
    assert mapping.values["action"] == {"1": "started", "2": "completed"}


def test_boolean_map_keys_match_the_text_of_a_boolean_cell(tmp_path: Path) -> None:
    """`true:` was refused as "values.status.1.[key]: Input should be a valid string"."""
    mapping = load_mapping(write(tmp_path, "values: {status: {true: up, FALSE: down}}\n"))
    assert mapping.values["status"] == {"true": "up", "false": "down"}


def test_two_map_keys_of_one_text_are_refused_not_one_dropped(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"values\.status: '1' and 1 are the same key '1'"):
        load_mapping(write(tmp_path, 'values: {status: {"1": up, 1: down}}\n'))


@pytest.mark.parametrize("keys", ["1: up, true: down", "1: up, 1.0: down", "1: up, 0x1: down"])
def test_two_map_keys_yaml_reads_as_one_are_refused_not_one_dropped(
    tmp_path: Path, keys: str
) -> None:
    """`true` and `1` are one dict key in Python: the map kept `{"1": "down"}` and a cell
    of 1 was imported as down, unseen."""
    with pytest.raises(MappingError, match=r"found the key '(true|1\.0|0x1)' twice \(as '1'"):
        load_mapping(write(tmp_path, f"values: {{status: {{{keys}}}}}\n"))


def test_a_single_time_format_is_a_list_of_one() -> None:
    assert ImportMapping.model_validate({"time": {"format": "%d.%m.%Y"}}).time.format == (
        "%d.%m.%Y",
    )


def test_a_missing_mapping_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"cannot read mapping .*nope\.yaml"):
        load_mapping(tmp_path / "nope.yaml")
