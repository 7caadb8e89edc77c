"""Row mappers: what each topic's record becomes in ClickHouse (pure, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from samples import customer_json, scan_json
from sink_samples import make_alert, make_state, record
from structlog.testing import capture_logs

from chainwatch.settings import Settings
from chainwatch.sink_runner import build_mappers
from schemas.alerts import AlertStatus
from schemas.dead_letter import DeadLetter, DeadLetterSource, ErrorDetail, ReasonCode
from schemas.plan import load_plan
from schemas.validation import KEYLESS_TOMBSTONE
from sinks.clickhouse.mapping import RecordForwarded, RecordInvalid
from sinks.clickhouse.rows import CustomerRows, OrderEventRows, ScanRows, UnitStatusRows
from sinks.clickhouse.rows_outputs import AlertRows, DeadLetterRows, OrderStateRows
from sinks.clickhouse.sink import ClickHouseSink
from streams.partitioning import partition_of

PLAN = load_plan(None)


def _as_dict(table_columns: tuple[str, ...], row: tuple[object, ...]) -> dict[str, object]:
    assert len(table_columns) == len(row)
    return dict(zip(table_columns, row, strict=True))


def test_scan_row_carries_its_kafka_position_and_normalised_time() -> None:
    rows = ScanRows().rows(record(scan_json(1), topic="p.scans", partition=2, offset=41))
    row = _as_dict(ScanRows.table.columns, rows["scans"][0])
    assert row["event_id"] == "ev-1"
    assert getattr(row["event_time"], "tzinfo", None) is not None
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == ("p.scans", 2, 41)
    assert json.loads(str(row["attributes"])) == {"shade": "navy"}


@pytest.mark.parametrize(
    "value",
    [b"not json", b"[]", None, scan_json(1, event_time="2027-03-01T10:00:00")],
    ids=["not-json", "not-object", "null", "naive-time"],
)
def test_invalid_scans_are_rejected_not_crashing(value: bytes | None) -> None:
    with pytest.raises(RecordInvalid):
        ScanRows().rows(record(value))


def test_rejected_outside_the_plans_qc_stage_is_invalid() -> None:
    bad = scan_json(1, action="rejected", stage="dyeing")
    with pytest.raises(RecordInvalid):
        ScanRows(PLAN).rows(record(bad))


def test_customer_keeps_extra_fields_and_uses_offset_as_version() -> None:
    value = customer_json("C-7", "Nordic Knits AB", segment="luxury")
    rows = CustomerRows().rows(record(value, offset=9, key=b"C-7"))["customers"]
    row = _as_dict(CustomerRows.table.columns, rows[0])
    assert json.loads(str(row["extra"])) == {"segment": "luxury"}
    assert (row["is_deleted"], row["version"]) == (0, 9)


def test_tombstone_deletes_the_keyed_customer() -> None:
    rows = CustomerRows().rows(record(None, offset=10, key=b"C-7"))["customers"]
    row = _as_dict(CustomerRows.table.columns, rows[0])
    assert (row["customer_id"], row["is_deleted"], row["version"]) == ("C-7", 1, 10)


@pytest.mark.parametrize("key", [b'"C-7"', b'"\\ud800"', b"C" * 200_000])
def test_a_tombstone_whose_key_is_no_customer_id_is_invalid(key: bytes) -> None:
    """A JSON-quoted lone surrogate became a row clickhouse-connect could not encode:
    the insert failed, was retried for ever, and the sink stored nothing more."""
    with pytest.raises(RecordInvalid, match="key"):
        CustomerRows().rows(record(None, offset=10, key=key))


def test_tombstone_without_key_is_invalid_for_the_reason_the_engine_gives() -> None:
    with pytest.raises(RecordInvalid) as raised:
        CustomerRows().rows(record(None))
    assert str(raised.value) == f"validation_failed: key: {KEYLESS_TOMBSTONE.msg}"


def test_order_update_keeps_absent_fields_null() -> None:
    value = json.dumps(
        {
            "op": "updated",
            "order_id": "PO-1",
            "due_at": "2027-03-09T00:00:00Z",
            "event_time": "2027-03-02T00:00:00Z",
        }
    ).encode()
    row = _as_dict(
        OrderEventRows.table.columns, OrderEventRows().rows(record(value))["order_events"][0]
    )
    assert row["op"] == "updated"
    assert row["quantity"] is None
    assert row["route"] == []


def test_unit_status_row() -> None:
    value = json.dumps(
        {
            "event_id": "u-1",
            "unit_id": "KNIT-02",
            "status": "down",
            "reason": "power_outage",
            "event_time": "2027-03-01T09:30:00Z",
        }
    ).encode()
    row = _as_dict(
        UnitStatusRows.table.columns, UnitStatusRows().rows(record(value))["unit_status"][0]
    )
    assert (row["status"], row["reason"], row["stage"]) == ("down", "power_outage", None)


def test_alert_version_is_the_offset_so_the_latest_record_wins() -> None:
    first = AlertRows().rows(record(make_alert(1).model_dump_json().encode(), offset=5))
    later = AlertRows().rows(
        record(make_alert(1, AlertStatus.RESOLVED).model_dump_json().encode(), offset=8)
    )
    cols = AlertRows.table.columns
    a, b = _as_dict(cols, first["alerts"][0]), _as_dict(cols, later["alerts"][0])
    assert a["alert_id"] == b["alert_id"]
    assert (a["version"], b["version"]) == (5, 8)
    assert b["status"] == "resolved"
    assert b["customer_tier"] == "platinum"


def test_order_state_fills_three_tables_and_flags_on_time_visits() -> None:
    rows = OrderStateRows(PLAN).rows(record(make_state(1, version=3).model_dump_json().encode()))
    assert len(rows["order_state"]) == len(rows["orders"]) == 1
    visits = [_as_dict(OrderStateRows.stage_visits.columns, r) for r in rows["stage_visits"]]
    by_stage = {v["stage"]: v for v in visits}
    # default plan: yarn_sourcing 48h budget (took 10h), dyeing 36h (took 50h)
    assert by_stage["yarn_sourcing"]["on_time"] == 1
    assert by_stage["dyeing"]["on_time"] == 0
    assert by_stage["dyeing"]["duration_s"] == 50 * 3600
    assert all(v["version"] == 3 and v["customer_tier"] == "gold" for v in visits)


def test_open_visit_has_no_on_time_flag_yet() -> None:
    rows = OrderStateRows(PLAN).rows(
        record(make_state(1, 1, ended=False).model_dump_json().encode())
    )
    open_visit = _as_dict(OrderStateRows.stage_visits.columns, rows["stage_visits"][1])
    assert open_visit["on_time"] is None
    assert open_visit["duration_s"] is None


def test_dead_letter_row() -> None:
    from datetime import UTC, datetime

    letter = DeadLetter.build(
        b"{bad",
        DeadLetterSource(kind="kafka", topic="scans", partition=1, offset=7),
        [ErrorDetail(loc="", msg="bad json", type="json_invalid")],
        ReasonCode.NOT_JSON,
        datetime(2027, 3, 1, tzinfo=UTC),
    )
    rows = DeadLetterRows().rows(record(letter.model_dump_json().encode()))
    row = _as_dict(DeadLetterRows.table.columns, rows["dead_letters"][0])
    assert (row["reason_code"], row["source_offset"]) == ("not_json", 7)


def test_an_imported_rows_dead_letter_is_stored_with_its_file_and_line() -> None:
    """The sink refused source kind `import` (its own shape lagged the contract's), so
    `chainwatch import`'s rejected rows never reached ClickHouse."""
    from datetime import UTC, datetime

    letter = DeadLetter.build(
        b"PO-1;dyeing;yesterday",
        DeadLetterSource(kind="import", file="scans-2026-11.csv", line=42),
        [ErrorDetail(loc="event_time", msg="not a time", type="datetime_from_date_parsing")],
        ReasonCode.VALIDATION_FAILED,
        datetime(2027, 3, 1, tzinfo=UTC),
    )
    rows = DeadLetterRows().rows(record(letter.encode()))
    row = _as_dict(DeadLetterRows.table.columns, rows["dead_letters"][0])
    assert (row["source_kind"], row["source_file"], row["source_line"]) == (
        "import",
        "scans-2026-11.csv",
        42,
    )
    assert row["truncated"] is False
    assert row["original_size"] is None


def test_a_cut_dead_letter_is_stored_as_cut_with_the_originals_size_and_hash() -> None:
    import hashlib
    from datetime import UTC, datetime

    huge = b"x" * 50_000
    letter = DeadLetter.build(
        huge,
        DeadLetterSource(kind="http", request_id="r-1", index=3),
        [ErrorDetail(loc="", msg="too big", type="too_large")],
        ReasonCode.VALIDATION_FAILED,
        datetime(2027, 3, 1, tzinfo=UTC),
        max_bytes=4_096,
    )
    rows = DeadLetterRows().rows(record(letter.encode()))
    row = _as_dict(DeadLetterRows.table.columns, rows["dead_letters"][0])
    assert row["truncated"] is True
    assert row["original_size"] == 50_000
    assert row["original_sha256"] == hashlib.sha256(huge).hexdigest()
    assert row["source_index"] == 3


def test_a_keyless_record_off_its_ids_partition_is_left_to_its_copy_a_keyed_one_is_invalid() -> (
    None
):
    """A keyless one is forwarded by the engine to its id's partition (`schemas.placement`)
    and the copy's rows are stored; stored too, a keyless scan counted twice and a
    customer record from another partition raced the copy's version: valid input, not
    `RecordInvalid`. A keyed one is the engine's dead letter (never forwarded: a keyed
    copy could loop between workers that count partitions differently): invalid."""
    settings = Settings(kafka={"partitions": 4})
    mappers = build_mappers(settings)
    scans, customers = mappers["scans"], mappers["crm.customers"]
    value = scan_json(1)  # order PO-1
    home = partition_of(b"PO-1", 4)
    away = (home + 1) % 4
    assert scans.rows(record(value, partition=home))["scans"]
    assert scans.rows(record(value, partition=home, key=b"PO-1"))["scans"]
    with pytest.raises(RecordForwarded, match=f"to partition {home}"):
        scans.rows(record(value, partition=away))
    with pytest.raises(RecordInvalid, match=f"key_mismatch: order_id: .* on partition {away}, "):
        scans.rows(record(value, partition=away, key=b"PO-1"))
    with pytest.raises(RecordInvalid, match="key_mismatch"):  # mis-keyed: invalid
        scans.rows(record(value, partition=home, key=b"PO-2"))
    c_home = partition_of(b"C-7", 4)
    c_away = (c_home + 1) % 4
    profile = customer_json("C-7", "Nordic Knits AB")
    with pytest.raises(RecordForwarded):
        customers.rows(record(profile, partition=c_away))
    for value in (profile, None):  # a tombstone too
        assert customers.rows(record(value, partition=c_home, key=b"C-7"))["customers"]
        with pytest.raises(RecordInvalid, match="murmur2_random"):
            customers.rows(record(value, partition=c_away, key=b"C-7"))


def test_the_sink_counts_forwarded_originals_apart_from_invalid_records_and_stores_copies() -> None:
    mappers = build_mappers(Settings(kafka={"partitions": 4}))
    sink = ClickHouseSink(bootstrap="unused:1", group_id="g", client=_NoStore(), mappers=mappers)
    topic = next(name for name in mappers if name.endswith("scans"))
    home = partition_of(b"PO-1", 4)
    away = TopicPartition(topic, (home + 1) % 4)
    counted = ("chainwatch_sink_forwarded_records_total", {"topic": topic})
    before = REGISTRY.get_sample_value(*counted)
    with capture_logs() as logs:
        sink.add_many(away, [record(scan_json(1), topic=topic, partition=away.partition)])
        copy = record(scan_json(1), topic=topic, partition=home, key=b"PO-1")
        sink.add_many(TopicPartition(topic, home), [copy])
    after = REGISTRY.get_sample_value(*counted)
    assert (sink.stats.forwarded_records, sink.stats.invalid_records) == (1, 0)
    assert (after or 0) - (before or 0) == 1
    assert logs == []  # the engine logs the forward, not the sink
    assert sink.buffered_rows == 1  # the copy's row
    # a copy made with 4 partitions, read by a sink that counts 8: the engine's dead letter
    eight = build_mappers(Settings(kafka={"partitions": 8}))
    other = ClickHouseSink(bootstrap="unused:1", group_id="g", client=_NoStore(), mappers=eight)
    copied_to = partition_of(b"PO-2", 4)  # scan 2 is order PO-2's
    assert copied_to != partition_of(b"PO-2", 8)
    with capture_logs() as logs:
        other.add_many(
            TopicPartition(topic, copied_to),
            [record(scan_json(2), topic=topic, partition=copied_to, key=b"PO-2")],
        )
    assert (other.stats.forwarded_records, other.stats.invalid_records) == (0, 1)
    assert [e["event"] for e in logs] == ["invalid_record_skipped"]
    assert logs[0]["error"].startswith("RecordInvalid: key_mismatch: order_id: the record is on")
    assert logs[0]["error"].endswith("differs from the topic's partition count")  # the advice
    assert other.buffered_rows == 0


class _NoStore:
    def insert(self, table: str, rows: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")

    def query(self, sql: str, **kwargs: Any) -> Any:
        raise AssertionError("not used")
