"""Records on `alerts` that are not alerts: skipped, counted, logged with why (no Kafka).

They used to be dropped with only a counter: nothing said which record it was
nor what was wrong with it.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from log_lines import Lines
from sink_samples import make_alert
from webhook_pipes import hand_records, offline_pipe

from sinks.webhooks import invalid
from sinks.webhooks.dispatcher import EndpointPipe

TP = TopicPartition("cw.alerts", 3)


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Lines:
    recorder = Lines()
    monkeypatch.setattr(invalid, "log", recorder)
    return recorder


def _pipe() -> EndpointPipe:
    return offline_pipe("ops-slack")


def _handle(pipe: EndpointPipe, values: list[bytes | None], first: int = 0) -> None:
    hand_records(pipe, TP, values, first)


def test_each_invalid_record_is_logged_with_where_it_is_and_why(lines: Lines) -> None:
    pipe = _pipe()
    pipe.invalid.window_s = 0.0  # every line, to read each reason
    good = make_alert(1).model_dump_json().encode()
    nan = good.replace(b'"lateness_s":null', b'"lateness_s":NaN')

    partial_alert = b'{"alert_id":"' + b"ab" * 32 + b'"}'
    _handle(pipe, [None, b"{not json", partial_alert, nan, good])

    assert [(x["event"], x["level"], x["offset"]) for x in lines.lines] == [
        ("invalid_alert_skipped", "warning", 0),
        ("invalid_alert_skipped", "warning", 1),
        ("invalid_alert_skipped", "warning", 2),
        ("invalid_alert_skipped", "warning", 3),
    ]
    assert all(
        (x["endpoint"], x["topic"], x["partition"], x["bug"]) == ("ops-slack", TP.topic, 3, False)
        for x in lines.lines
    )
    tombstone, not_json, partial, non_finite = (x["reason"] for x in lines.lines)
    assert tombstone == "tombstone: the record has no value"
    assert not_json.startswith("record: Invalid JSON")
    assert partial == (
        "type: Field required; severity: Field required; status: Field required (+2 more)"
    )
    assert non_finite.startswith("lateness_s: ")
    assert "finite" in non_finite
    # skipped, counted, and the position moves past them to the good alert, which is queued
    assert (pipe.stats.alerts, pipe.stats.invalid) == (5, 4)
    assert pipe.queue.qsize() == 1
    assert pipe.tracker.committable() == {TP: (4, "")}  # only the queued alert is pending


def test_a_flood_of_garbage_gets_one_line_per_window_with_the_count(lines: Lines) -> None:
    pipe = _pipe()
    now = [100.0]
    pipe.invalid = invalid.InvalidAlertLog("ops-slack", window_s=30.0, clock=lambda: now[0])

    _handle(pipe, [b"garbage"] * 1000)
    now[0] += 31.0
    _handle(pipe, [b"garbage"] * 2, first=1000)

    assert [(x["offset"], x.get("more_since_last_line")) for x in lines.lines] == [
        (0, None),
        (1000, 999),
    ]
    assert pipe.stats.invalid == 1002  # the counter has every one


def test_a_failure_of_ours_on_a_valid_record_is_skipped_as_a_bug_not_raised(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer loop must never raise on one record: it would stop every later one."""
    pipe = _pipe()

    def broken(*args: Any) -> str:
        raise ValueError("Out of range float values are not JSON compliant")

    monkeypatch.setattr(pipe.ids, "id_for", broken)
    _handle(pipe, [make_alert(1).model_dump_json().encode()])

    [line] = lines.lines
    assert (line["level"], line["bug"], line["offset"]) == ("error", True, 0)
    assert line["reason"] == (
        "processing_error: ValueError: Out of range float values are not JSON compliant"
    )
    assert isinstance(line["exc_info"], ValueError)  # the trace, for the bug report
    assert pipe.stats.invalid == 1
    assert pipe.tracker.committable() == {TP: (1, "")}
