"""Issue 17 (6): `CHAINWATCH_LOG_FORMAT=json chainwatch worker` writes JSON lines only,
faust's and aiokafka's records included."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from docs_helpers import ROOT, user_env

pytestmark = pytest.mark.integration


def test_the_worker_logs_one_json_object_per_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    env = user_env(
        tmp_path / "data",
        CHAINWATCH_LOG_FORMAT="json",
        CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        CHAINWATCH_KAFKA__TOPIC_PREFIX=f"t{run}.",
        CHAINWATCH_ENGINE__APP_ID=f"cw-json-{run}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "chainwatch", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "Worker ready" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(timeout=120), "worker not ready in 120 s:\n" + "".join(lines[-20:])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=10)
    assert proc.stderr is not None
    proc.stderr.close()

    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line[:200]!r}")
    assert all({"event", "level", "timestamp"} <= r.keys() for r in records)
    faust_records = [r for r in records if str(r.get("logger", "")).startswith("faust")]
    assert faust_records, "faust's own records must go through the same renderer"


def test_a_commands_error_line_is_a_json_event_with_json_logs(tmp_path: Path) -> None:
    """docs/replay.md: with JSON logs "every stderr line is a JSON log event, the progress
    and the result lines alike"; the `error:` line that ends a failed command was plain
    text, the one line a log collector could not parse. (Kafka is not needed: nothing
    answers at the bootstrap, which is the error.)"""
    from docs_helpers import run_cli

    env = user_env(
        tmp_path / "data",
        CHAINWATCH_LOG_FORMAT="json",
        CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9",
        CHAINWATCH_KAFKA__PROBE_TIMEOUT_S="1",  # waited out (3 s by default)
    )
    result = run_cli("replay", "examples/example_1_on_time.ndjson", env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]  # each one JSON
    assert events, result.stderr
    last = events[-1]
    assert last["level"] == "error", last
    assert last["exit_code"] == 1, last
    assert last["event"].startswith("error: Kafka at 127.0.0.1:9 does not answer"), last


def test_the_unknown_setting_warning_is_a_json_event_with_json_logs(tmp_path: Path) -> None:
    """The warning about a mistyped `CHAINWATCH_` variable came as plain text among the
    JSON events, as the closing `error:` line did."""
    from docs_helpers import run_cli

    env = user_env(tmp_path / "data", CHAINWATCH_LOG_FORMAT="json", CHAINWATCH_KAFKA__PARTITONS="8")
    result = run_cli("plan-capacity", "--rate", "1", env=env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]  # each one JSON
    assert [e["level"] for e in events] == ["warning"], events
    assert events[0]["event"].startswith(
        "warning: CHAINWATCH_KAFKA__PARTITONS is not a setting, ignored"
    ), events
