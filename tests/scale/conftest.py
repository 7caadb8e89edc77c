"""The fleet test runs only when asked for by name (`-m fleet`, `make test-fleet`)."""

from __future__ import annotations

import re

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`-m integration` or `-m slow` must not start an hour-long run (skipped before any
    fixture, so no broker is started for it)."""
    if re.search(r"(?<!not )\bfleet\b", str(config.getoption("markexpr"))):
        return
    skip = pytest.mark.skip(reason="opt-in: make test-fleet (pytest -m fleet)")
    for item in items:
        if item.get_closest_marker("fleet"):
            item.add_marker(skip)
