"""Where a replay's event-time windows end (`chainwatch.replay_windows`): plain unit tests."""

from __future__ import annotations

from chainwatch.replay_windows import EventTimeWindows, window_ms
from streams.engine.limits import DAY_MS, EngineLimits


def _breaks(windows: EventTimeWindows, times: list[int | None]) -> list[int]:
    """Indices of the records that open a new window."""
    return [i for i, t in enumerate(times) if windows.starts_new(t)]


def test_a_window_is_well_under_both_horizons() -> None:
    assert window_ms(EngineLimits()) == 30 * DAY_MS // 4
    short = EngineLimits(closed_order_retention_ms=DAY_MS)
    assert window_ms(short) == DAY_MS // 4
    assert window_ms(short) < short.unit_lookback_ms


def test_a_record_one_window_length_after_the_start_opens_the_next() -> None:
    windows = EventTimeWindows(length_ms=10)
    assert _breaks(windows, [100, 105, 109, 110, 115, 119, 120]) == [3, 6]
    assert windows.number == 2
    assert windows.start_ms == 120


def test_untimed_and_late_records_stay_in_the_window_they_come_in() -> None:
    windows = EventTimeWindows(length_ms=10)
    # CRM records and unreadable lines have no event time; a late record is older than the start
    assert _breaks(windows, [None, 100, None, 50, 95, None, 108, 111]) == [7]


def test_a_gap_longer_than_a_window_opens_one_window_not_several() -> None:
    windows = EventTimeWindows(length_ms=10)
    assert _breaks(windows, [0, 1_000, 1_001]) == [1]
    assert windows.number == 1


def test_crm_records_after_events_are_a_window_of_their_own() -> None:
    windows = EventTimeWindows(length_ms=10)
    flags = [True, True, False, True, True, False, False]
    times = [None, None, 100, None, None, 101, 102]
    opened = [
        i
        for i, (t, crm) in enumerate(zip(times, flags, strict=True))
        if windows.starts_new(t, crm=crm)
    ]
    # the set-up CRM records before any event open nothing; the two after an event share one
    # window, closed by the next timed record
    assert opened == [3, 5]
    assert windows.start_ms == 101
