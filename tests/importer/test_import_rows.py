"""Mapping one row: time zones, number formats, value maps, derived event ids. Pure."""

from __future__ import annotations

import sys
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest

from chainwatch.importer.mapper import RowMapper, derive_event_id
from schemas.import_mapping import ImportMapping

BERLIN = {"format": ["%d.%m.%Y %H:%M", "iso"], "timezone": "Europe/Berlin"}


def mapper(kind: str = "scans", **mapping: Any) -> RowMapper:
    return RowMapper(ImportMapping.model_validate(mapping), kind)


def scan(**cells: Any) -> dict[str, Any]:
    row = {
        "order_id": "PO-1",
        "stage": "dyeing",
        "action": "started",
        "unit_id": "DYE-01",
        "event_time": "22.11.2026 14:05",
    }
    row.update(cells)
    return row


def mapped(m: RowMapper, row: dict[str, Any]) -> dict[str, Any]:
    record, problems = m.map(row)
    assert problems == [], problems
    return record


def problem(m: RowMapper, row: dict[str, Any]) -> tuple[str, str, str]:
    _record, problems = m.map(row)
    assert len(problems) == 1, problems
    return problems[0].field, problems[0].type, problems[0].message


# --- time zones ------------------------------------------------------------------------


def test_a_naive_winter_time_in_berlin_is_utc_plus_one() -> None:
    record = mapped(mapper(time=BERLIN), scan())
    assert record["event_time"].astimezone(UTC) == datetime(2026, 11, 22, 13, 5, tzinfo=UTC)


def test_a_naive_summer_time_in_berlin_is_utc_plus_two() -> None:
    record = mapped(mapper(time=BERLIN), scan(event_time="22.07.2026 14:05"))
    assert record["event_time"].astimezone(UTC) == datetime(2026, 7, 22, 12, 5, tzinfo=UTC)


def test_a_time_with_its_own_offset_keeps_it_whatever_the_zone() -> None:
    record = mapped(mapper(time=BERLIN), scan(event_time="2026-11-22T14:05:00+05:30"))
    assert record["event_time"].astimezone(UTC) == datetime(2026, 11, 22, 8, 35, tzinfo=UTC)


def test_a_local_time_the_clocks_skip_is_rejected_not_shifted() -> None:
    field, kind, message = problem(mapper(time=BERLIN), scan(event_time="29.03.2026 02:30"))
    assert (field, kind) == ("event_time", "import_time_nonexistent")
    assert "does not exist in Europe/Berlin" in message


def test_the_autumn_hour_that_happens_twice_is_rejected_unless_the_mapping_picks_a_side() -> None:
    row = scan(event_time="25.10.2026 02:30")
    field, kind, message = problem(mapper(time=BERLIN), row)
    assert (field, kind) == ("event_time", "import_time_ambiguous")
    assert "time.ambiguous" in message
    earlier = mapped(mapper(time={**BERLIN, "ambiguous": "earlier"}), row)["event_time"]
    later = mapped(mapper(time={**BERLIN, "ambiguous": "later"}), row)["event_time"]
    assert earlier.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert later.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_a_naive_time_without_a_zone_in_the_mapping_is_rejected_like_the_contract_does() -> None:
    field, kind, _ = problem(mapper(), scan(event_time="2026-11-22T14:05:00"))
    assert (field, kind) == ("event_time", "timestamp_no_offset")


@pytest.mark.parametrize(
    "cell",
    [
        "31.12.9999 23:00",  # UTC 10000-01-01: past datetime's range (OverflowError)
        "01.01.0001 00:00",  # local mean time, -04:56:02: an offset RFC 3339 cannot write
        datetime(9999, 12, 31, 23),  # noqa: DTZ001 - a spreadsheet date cell is naive
        "31.12.2099 20:00",  # UTC 2100-01-01T01:00
        "31.12.1970 23:00",  # UTC 1971-01-01T04:00: inside, as the offset says
    ],
)
def test_a_local_time_outside_the_contracts_range_is_a_range_error(cell: Any) -> None:
    """Before: `processing_error: OverflowError: date value out of range` (read as a bug)
    or `timestamp must be RFC 3339` for the local mean time of year 1."""
    m = mapper(time={**BERLIN, "timezone": "America/New_York"})
    if cell == "31.12.1970 23:00":
        assert mapped(m, scan(event_time=cell))["event_time"].year == 1970
        return
    field, kind, message = problem(m, scan(event_time=cell))
    assert (field, kind) == ("event_time", "timestamp_range")
    assert message.endswith("is outside 1971-01-01 - 2100-01-01")


@pytest.mark.parametrize(
    ("cell", "kind"),
    [
        (" 2026-11-22T14:05:00\u00a0", "timestamp_no_offset"),
        ("\t1900-01-01T00:00:00Z ", "timestamp_range"),
    ],
)
def test_a_time_error_shows_the_time_as_written(cell: str, kind: str) -> None:
    """As the "matches none" error does: these showed the time cut of its whitespace."""
    field, found, message = problem(mapper(), scan(event_time=cell))
    assert (field, found) == ("event_time", kind)
    assert message.startswith(f"{cell!r} ")


@pytest.mark.parametrize(
    ("cell", "kind"),
    [
        ("9" * 1_000_000, "import_time_format"),
        ("2026-11-22T14:05:00" + " " * 1_000_000, "timestamp_no_offset"),
        (" " * 1_000_000 + "1900-01-01T00:00:00Z", "timestamp_range"),
    ],
)
def test_a_time_error_repeats_at_most_the_start_of_the_time(cell: str, kind: str) -> None:
    """A 1 MB time cell was repeated whole in its rejection's reason (the rejects line,
    the log, the dead letter), as a number of 5,000 digits is not."""
    field, found, message = problem(mapper(), scan(event_time=cell))
    assert (field, found) == ("event_time", kind)
    assert message.startswith(f"{cell[:40]!r}... ({len(cell):,} characters) ")
    assert len(message) < 200


def test_formats_are_tried_in_order_and_a_spreadsheet_date_cell_needs_none() -> None:
    m = mapper(time=BERLIN)
    assert mapped(m, scan(event_time="2026-11-22 14:05"))["event_time"].hour == 14
    wall_time = datetime(2026, 11, 22, 14, 5)  # noqa: DTZ001 - a spreadsheet cell has no zone
    cell = mapped(m, scan(event_time=wall_time))["event_time"]
    assert cell.utcoffset() is not None
    assert cell.hour == 14
    field, kind, message = problem(m, scan(event_time="22/11/2026"))
    assert (field, kind) == ("event_time", "import_time_format")
    assert "%d.%m.%Y %H:%M, iso" in message


# --- numbers, text, value maps ------------------------------------------------------------


@pytest.mark.parametrize(
    ("numbers", "cell", "expected"),
    [
        ({}, "212.5", 212.5),
        ({}, "500", 500),
        ({}, 212.5, 212.5),
        ({"decimal": ","}, "212,5", 212.5),
        ({"decimal": ",", "thousands": "."}, "1.234,5", 1234.5),
        ({"thousands": ","}, "1,234.5", 1234.5),
        ({"decimal": ","}, "1 234,5", 1234.5),
    ],
)
def test_numbers_in_the_files_own_format(
    numbers: dict[str, str], cell: Any, expected: float
) -> None:
    record = mapped(mapper(time=BERLIN, numbers=numbers), scan(quantity=cell))
    assert record["quantity"] == expected


def test_a_decimal_comma_without_the_mapping_saying_so_is_rejected_with_a_hint() -> None:
    field, _kind, message = problem(mapper(time=BERLIN), scan(quantity="212,5"))
    assert field == "quantity"
    assert "numbers.decimal: ','" in message


def test_a_number_error_repeats_at_most_the_start_of_the_cell() -> None:
    """A 1 MB quantity cell that is no number was repeated whole in its rejection's
    reason, as the range error of one of 5,000 digits is not."""
    cell = "12,5" + "x" * 1_000_000
    field, kind, message = problem(mapper(time=BERLIN), scan(quantity=cell))
    assert (field, kind) == ("quantity", "import_number")
    assert message.startswith(f"{cell[:40]!r}... ({len(cell):,} characters) is not a number")
    assert "numbers.decimal: ','" in message
    assert len(message) < 200


def test_value_maps_ignore_case_blanks_and_unicode_normal_form() -> None:
    m = mapper(
        time=BERLIN, values={"stage": {"Färberei": "dyeing"}, "action": {"Ende": "completed"}}
    )
    decomposed = unicodedata.normalize("NFD", "  FÄRBEREI ")
    record = mapped(m, scan(stage=decomposed, action="ende"))
    assert (record["stage"], record["action"]) == ("dyeing", "completed")
    assert mapped(m, scan(stage="knitting"))["stage"] == "knitting"  # unlisted: kept


def test_columns_are_matched_by_name_and_unmapped_fields_by_their_own_name() -> None:
    m = mapper(time=BERLIN, columns={"order_id": "Auftrag", "event_time": "Zeitpunkt"})
    row = {"auftrag ": "PO-9", "STAGE": "dyeing", "Action": "started", "unit_id": "D"}
    record = mapped(m, {**row, "Zeitpunkt": "22.11.2026 14:05"})
    assert record["order_id"] == "PO-9"
    assert record["stage"] == "dyeing"


def test_excel_numbers_in_id_columns_become_the_ids_they_show() -> None:
    record = mapped(mapper(time=BERLIN), scan(order_id=4101.0, unit_id=7))
    assert (record["order_id"], record["unit_id"]) == ("4101", "7")


def test_defaults_fill_absent_and_empty_cells_and_orders_default_to_created() -> None:
    record = mapped(mapper(time=BERLIN, defaults={"uom": "kg"}), scan(quantity="3", uom=""))
    assert record["uom"] == "kg"
    order = mapped(mapper("orders"), {"order_id": "PO-1"})
    assert order["op"] == "created"


def test_a_route_cell_is_split_and_mapped_with_the_stage_map() -> None:
    m = mapper("orders", values={"stage": {"Färberei": "dyeing", "Strickerei": "knitting"}})
    record = mapped(m, {"order_id": "PO-1", "route": "Färberei > Strickerei, shipping"})
    assert record["route"] == ["dyeing", "knitting", "shipping"]


def test_attribute_columns_and_crm_pass_through_fields() -> None:
    scans = mapper(time=BERLIN, attributes={"shade": "Farbe", "gauge": "Feinheit"})
    record = mapped(scans, scan(Farbe="navy", Feinheit=12, Other="x"))
    assert record["attributes"] == {"shade": "navy", "gauge": 12}
    assert "Other" not in record
    crm = mapper("customers", columns={"customer_id": "Kundennr"})
    customer = mapped(crm, {"Kundennr": "C-7", "name": "Nordic", "tier": "gold", "Segment": "B2B"})
    assert customer == {"customer_id": "C-7", "name": "Nordic", "tier": "gold", "Segment": "B2B"}


# --- derived event ids ---------------------------------------------------------------------


def test_a_derived_event_id_is_a_valid_identifier_stable_across_runs() -> None:
    record = mapped(mapper(time=BERLIN), scan())
    first = derive_event_id("scans", record)
    assert first == derive_event_id("scans", dict(reversed(list(record.items()))))
    assert first.startswith("imp-")
    assert len(first) <= 64
    # a fixed value: the derivation must not change between releases (re-imports are no-ops)
    assert first == "imp-" + _expected_digest(record)


def _expected_digest(record: dict[str, Any]) -> str:
    import hashlib
    import json

    body = dict(record, event_time="2026-11-22T13:05:00.000Z")
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"scans\n{text}".encode()).hexdigest()[:40]


def test_the_same_instant_written_another_way_gets_the_same_id() -> None:
    m = mapper(time=BERLIN)
    local = mapped(m, scan(quantity="212,5".replace(",", ".")))
    offset = mapped(m, scan(event_time="2026-11-22T13:05:00Z", quantity=212.5))
    assert derive_event_id("scans", local) == derive_event_id("scans", offset)
    whole = mapped(m, scan(quantity="500"))
    excel = mapped(m, scan(quantity=500.0))
    assert derive_event_id("scans", whole) == derive_event_id("scans", excel)


@pytest.mark.parametrize(
    "change",
    [
        {"event_time": "22.11.2026 14:06"},
        {"action": "completed"},
        {"unit_id": "DYE-02"},
        {"quantity": "1"},
    ],
)
def test_any_change_of_content_changes_the_id(change: dict[str, Any]) -> None:
    m = mapper(time=BERLIN)
    base = derive_event_id("scans", mapped(m, scan()))
    assert derive_event_id("scans", mapped(m, scan(**change))) != base
    assert derive_event_id("unit-status", mapped(m, scan())) != base


def test_an_attributes_cell_that_writes_a_key_twice_is_refused_not_resolved() -> None:
    """The parser kept the last `a`; a gateway or Kafka producer sending the same
    object is refused (`duplicate_key`), so the importer may not publish either value."""
    assert mapped(mapper(time=BERLIN), scan(attributes='{"a": 1, "b": 2}'))["attributes"] == {
        "a": 1,
        "b": 2,
    }
    field, kind, message = problem(mapper(time=BERLIN), scan(attributes='{"a": 1, "b": 2, "a": 3}'))
    assert (field, kind) == ("attributes", "duplicate_key")
    assert "'a' is written twice" in message
    assert message.endswith("so write it once")  # a cell is written, not sent


def test_an_attributes_cell_nested_at_the_parsers_depth_is_a_problem_not_a_crash() -> None:
    """The repeated-key check parses the cell again, its hook a frame deeper than the
    first parse: a cell just within the first parser's depth is refused as too deep."""
    m = mapper(time=BERLIN)
    limit = sys.getrecursionlimit()
    for n in range(limit - 200, limit):
        cell = '{"a": ' + "[" * n + "{}" + "]" * n + "}"
        _record, problems = m.map(scan(attributes=cell))
        assert {(p.field, p.type) for p in problems} <= {("attributes", "import_object")}, n
