"""The committed JSON Schemas match the models, and say what the models enforce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from samples import SAMPLES_BY_TOPIC

from schemas import jsonschema
from schemas.jsonschema import JSON_DIR, REGISTRY, SchemaEntry, load, stale, write

MINE = ("order", "customer", "scan_event", "unit_status", "replay_line", "dead_letter")


def test_committed_schemas_are_up_to_date() -> None:
    assert stale() == [], "run: python -m schemas.jsonschema"


def test_input_schemas_exist() -> None:
    for name in MINE:
        assert (JSON_DIR / f"{name}.schema.json").is_file()


def test_write_then_check_in_a_fresh_folder(tmp_path: Path) -> None:
    written = write(tmp_path)
    assert {path.name for path in written} >= {f"{name}.schema.json" for name in MINE}
    assert stale(tmp_path) == []
    assert jsonschema.main(["--check", "--out", str(tmp_path)]) == 0


def test_check_names_changed_and_extra_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path)
    (tmp_path / "order.schema.json").write_text("{}\n")
    (tmp_path / "gone.schema.json").write_text("{}\n")
    assert jsonschema.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "order.schema.json" in err
    assert "gone.schema.json" in err
    write(tmp_path)
    assert not (tmp_path / "gone.schema.json").exists()
    assert stale(tmp_path) == []


def test_files_are_sorted_and_newline_terminated() -> None:
    for name in MINE:
        text = (JSON_DIR / f"{name}.schema.json").read_text()
        assert text.endswith("}\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_missing_optional_models_are_skipped() -> None:
    assert load(SchemaEntry("nope", "schemas.does_not_exist", "Nope")) is None
    assert load(SchemaEntry("nope", "schemas.orders", "NoSuchClass")) is None


def test_registry_names_are_unique() -> None:
    names = [entry.name for entry in REGISTRY]
    assert len(names) == len(set(names))


def test_order_schema_states_per_op_requirements() -> None:
    schema = json.loads((JSON_DIR / "order.schema.json").read_text())
    rules = {
        rule["if"]["properties"]["op"]["const"]: rule["then"]["required"]
        for rule in schema["allOf"]
    }
    assert rules == {
        "created": ["customer_id", "quantity", "placed_at", "due_at"],
        "updated": ["event_time"],
        "cancelled": ["event_time"],
    }


def test_timestamps_require_an_offset_in_the_schema() -> None:
    schema = json.loads((JSON_DIR / "scan_event.schema.json").read_text())
    event_time = schema["properties"]["event_time"]
    assert event_time["format"] == "date-time"
    assert event_time["pattern"].endswith("([Zz]|[+-]\\d{2}:\\d{2})$")


def test_customer_schema_allows_extra_fields() -> None:
    schema = json.loads((JSON_DIR / "customer.schema.json").read_text())
    extra = schema["additionalProperties"]
    # Any JSON value (no type restriction), with the v1.2 number rule described.
    assert set(extra) == {"description"}
    assert "2^53" in extra["description"]


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("orders", "order"),
        ("crm.customers", "customer"),
        ("scans", "scan_event"),
        ("unit-status", "unit_status"),
    ],
)
def test_samples_name_every_schema_property_they_use(topic: str, name: str) -> None:
    schema = json.loads((JSON_DIR / f"{name}.schema.json").read_text())
    assert set(SAMPLES_BY_TOPIC[topic]()) <= set(schema["properties"])
