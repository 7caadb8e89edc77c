"""`chainwatch replay` as a user runs it: results on stdout, a quiet stderr, `--sink` (issue 11).

Topic creation followed by an immediate publish makes aiokafka warn about
`NotLeaderForPartitionError` retries, and the result reader logs `group_id is
None`; those lines go to the replay's log file, not to the user's terminal.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from child_env import environ_without_settings
from cli_in_process import cli_in_process
from samples import expected_alerts, worked_examples

from chainwatch.replay_store import stored_counts
from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.mark.integration
@pytest.mark.slow
def test_replay_prints_alerts_stores_them_with_sink_and_keeps_library_logs_off_stderr(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The spec's four worked examples in one file, replayed with `--sink` into chDB."""
    scenario = worked_examples(tmp_path / "march.ndjson")
    expected = expected_alerts()
    env = environ_without_settings()
    env |= {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chainwatch",
            "replay",
            str(scenario),
            "--until",
            "2027-03-31T00:00:00Z",
            "--sink",
            "--run-id",
            "march-1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    alerts = [orjson.loads(line) for line in result.stdout.splitlines()]
    # the spec's expected alerts (and more: T is later than example 2's, as in the backtest test)
    assert {a["alert_id"] for a in expected} <= {a["alert_id"] for a in alerts}
    for noise in ("NotLeaderForPartition", "group_id is None", "WARNING", "Traceback"):
        assert noise not in result.stderr, result.stderr
    dead_line = next(line for line in result.stderr.splitlines() if "dead letters:" in line)
    dead_letters = int(dead_line.split("dead letters:", 1)[1])
    assert dead_letters > 0  # example 4's bad input
    assert "stored as run march-1: " in result.stderr
    log_line = next(line for line in result.stderr.splitlines() if "client-library log:" in line)
    assert Path(log_line.split("client-library log:", 1)[1].strip()).parent.is_dir()
    # plain progress lines, no bar: stderr is a pipe
    assert "replay: publishing: 0/89\n" in result.stderr
    assert "replay: publishing: 89/89\n" in result.stderr
    assert "replay: waiting for the engine: " in result.stderr
    # each wait's last figure, done = total (it ended at a lag of zero without saying so)
    assert re.search(r"replay: waiting for the engine: ([1-9]\d*)/\1\n", result.stderr)
    # the workers' table state went with the run's topics (a dir was left per run)
    assert not list((tmp_path / "data").glob("worker*")), list((tmp_path / "data").iterdir())
    assert "\x1b" not in result.stderr

    store = SerializedClient(open_client(Settings(data_dir=tmp_path / "data")))
    try:
        stored = store.query(
            "SELECT alert_id, status, order_id FROM replay_alerts_current "
            "WHERE run_id = 'march-1' ORDER BY alert_id"
        ).result_rows
        assert stored == [(a["alert_id"], a["status"], a.get("order_id")) for a in alerts]
        counts = stored_counts(store, "march-1")
        assert counts["runs"] == 1
        assert counts["dead_letters"] == dead_letters
        orders = {
            row[0]
            for row in store.query(
                "SELECT order_id FROM replay_order_state_current WHERE run_id = 'march-1'"
            ).result_rows
        }
        assert {a["order_id"] for a in alerts if a.get("order_id")} <= orders
        assert store.query(
            "SELECT alerts, orders, dead_letters, input_file FROM replay_runs_current "
            "WHERE run_id = 'march-1'"
        ).result_rows == [(len(alerts), len(orders), dead_letters, "march.ndjson")]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run-id", "march"], "error: --run-id names a stored run: give it with --sink"),
        (["--sink", "--run-id", "march 2"], "error: --run-id 'march 2': use 1-64 letters"),
        (["--sink", "--run-id", "x" * 65], "use 1-64 letters, digits"),
    ],
)
def test_a_bad_run_id_is_one_line_before_kafka_or_the_store(
    tmp_path: Path,
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listens on port 9 and no store exists: the error comes first. Through the
    CLI's `main` in this process (a subprocess each was 1-2 s of imports): how the console
    script says a usage error (exit 2, one line) is checked by
    `tests/importer/test_import_cli.py::test_user_mistakes_said_by_the_console_script`."""
    env = {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
    }
    scenario = EXAMPLES / "example_1_on_time.ndjson"
    argv = ["replay", str(scenario), *args]
    result = cli_in_process(argv, env, monkeypatch, capsys, settings_built=False)
    assert result.returncode == 2  # the command line's fault
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert lines[0].endswith("(see `chainwatch replay --help`)")
    assert not (tmp_path / "data" / "clickhouse").exists()


def test_a_replay_worker_that_exits_is_reported_with_where_its_log_is(tmp_path: Path) -> None:
    """A worker's crash (a commit that timed out stops it) said only its exit code."""
    from chainwatch.replay import worker_exited

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert proc.wait(timeout=60) == 3
    message = str(worker_exited(proc, Settings(data_dir=tmp_path)))
    assert f"pid {proc.pid}" in message
    assert "code 3" in message
    assert str(tmp_path) in message  # the log dir lies under the data dir
