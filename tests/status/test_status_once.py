"""`chainwatch status --once` prints the ops picture from a store the real pipeline filled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainwatch.settings import Settings, child_environment
from sinks.clickhouse.connection import open_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def store(filled_store: Settings) -> Settings:
    return filled_store


def _status(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**child_environment(settings, os.environ), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_status_once_prints_every_section_with_the_stores_facts(store: Settings) -> None:
    client = open_client(store)
    try:
        at_risk = [
            r[0]
            for r in client.query(
                "SELECT order_id FROM order_state_current WHERE status = 'at_risk'"
            ).result_rows
        ]
        breaches = client.query(
            "SELECT order_id FROM alerts_current WHERE status = 'open' AND type IN "
            "('start_overdue', 'stage_overdue', 'handoff_overdue', 'order_overdue')"
        ).result_rows
        wip = client.query(
            "SELECT count() FROM order_state_current "
            "WHERE status IN ('on_track', 'at_risk', 'breached')"
        ).result_rows[0][0]
        latest_scan = client.query(
            "SELECT order_id FROM scans ORDER BY event_time DESC LIMIT 1"
        ).result_rows[0][0]
    finally:
        client.close()  # the command opens the store itself
    assert at_risk
    assert breaches
    assert wip

    done = _status(store, "--once")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for title in (
        "Work in progress per stage",
        f"Open breaches ({len(breaches)})",
        f"At-risk orders ({len(at_risk)})",
        "Units down or degraded",
        "Latest events",
    ):
        assert title in text, text
    for order_id in at_risk[:15]:
        assert order_id in text
    assert breaches[0][0] in text
    assert latest_scan in text


def test_status_on_an_empty_store_says_none(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "empty")
    from sinks.clickhouse.connection import SerializedClient
    from sinks.clickhouse.migrate import migrate

    client = SerializedClient(open_client(settings))
    try:
        migrate(client, settings)
    finally:
        client.close()
    done = _status(settings, "--once")
    assert done.returncode == 0, done.stderr
    assert "Open breaches: none" in done.stdout
    assert "Work in progress per stage: none" in done.stdout
