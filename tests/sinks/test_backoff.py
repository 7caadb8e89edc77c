"""The one backoff of the sinks and the notifier (sinks/backoff.py)."""

from __future__ import annotations

import random

from sinks.backoff import Backoff, exponential


def test_backoff_doubles_from_initial_caps_and_resets() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.current_s == 1.0
    backoff.reset()
    assert backoff.next() == 0.2


def test_jitter_stays_within_its_band_and_huge_attempt_numbers_do_not_overflow() -> None:
    rng = random.Random(7)
    for attempt, base in [(1, 1.0), (3, 4.0), (10_000, 8.0)]:
        delay = exponential(attempt, 1.0, 8.0, jitter=0.5, rng=rng)
        assert 0.5 * base <= delay <= 1.5 * base
