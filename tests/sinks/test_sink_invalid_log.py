"""Skipped records are logged without flooding the sink's log (the counter has them all)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import ConsumerRecord

from sinks.clickhouse import sink as sink_module
from sinks.clickhouse.mapping import RecordInvalid
from sinks.clickhouse.sink import InvalidRecordLog


class _Lines:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def _record(topic: str, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, b"k", b"{", None, 1, 1, ())


def test_a_topic_flooding_garbage_gets_one_line_per_window_with_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = _Lines()
    monkeypatch.setattr(sink_module, "log", lines)
    now = [100.0]
    invalid = InvalidRecordLog(window_s=30.0, clock=lambda: now[0])
    bad = RecordInvalid("not_json: expecting value")

    for offset in range(1000):  # one burst on one topic
        invalid.skipped(_record("cw.alerts", offset), bad)
    invalid.skipped(_record("cw.order-state", 7), ValueError("boom"))  # another topic: at once
    now[0] += 31.0
    invalid.skipped(_record("cw.alerts", 1000), bad)
    invalid.skipped(_record("cw.alerts", 1001), bad)

    assert [(line["topic"], line["offset"]) for line in lines.lines] == [
        ("cw.alerts", 0),
        ("cw.order-state", 7),
        ("cw.alerts", 1000),
    ]
    first, other, later = lines.lines
    assert "more_since_last_line" not in first
    assert first["error"] == "RecordInvalid: not_json: expecting value"
    assert first["bug"] is False
    assert other["bug"] is True  # not a RecordInvalid: a mapper or engine defect
    assert later["more_since_last_line"] == 999


def test_a_huge_error_is_cut_to_one_bounded_line(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _Lines()
    monkeypatch.setattr(sink_module, "log", lines)
    InvalidRecordLog().skipped(_record("cw.alerts", 0), RecordInvalid("x" * 100_000 + "\nmore"))
    (line,) = lines.lines
    assert line["error"] == "RecordInvalid: " + "x" * sink_module.ERROR_TEXT_MAX
