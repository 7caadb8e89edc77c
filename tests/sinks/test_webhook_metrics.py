"""The notifier's metric labels stay a bounded, documented set."""

from __future__ import annotations

import pytest

from sinks.webhooks.metrics import STATUS_CLASSES, status_class


@pytest.mark.parametrize(
    ("status", "label"),
    [(0, "error"), (200, "2xx"), (302, "3xx"), (404, "4xx"), (599, "5xx"), (101, "other")],
)
def test_an_attempt_is_labelled_by_its_status_class(status: int, label: str) -> None:
    assert status_class(status) == label


def test_a_status_past_599_is_no_series_of_its_own() -> None:
    """h11 takes any three digits: 600 and 999 made `6xx` and `9xx` series no rule knew."""
    labels = {status_class(status) for status in range(100, 1000)} | {status_class(0)}
    assert labels == set(STATUS_CLASSES)
