"""Issue 17: what a newcomer hit - a bad SLA plan reported as an internal error, `make
clean-data` deleting the wrong directory."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from docs_helpers import ROOT, run_cli, user_env

BAD_PLAN = """\
route: [yarn_sourcing, dyeing]
qc_stage: dyeing
rework_stage: yarn_sourcing
start_within: 24h
handoff: 12
stage_duration: {yarn_sourcing: 48h, dyeing: 36h}
"""


@pytest.mark.parametrize(
    "command",
    [
        ["worker"],
        ["replay", "examples/example_1_on_time.ndjson"],
        ["gateway", "--tokens", "TOKENS"],
        ["status", "--once"],
        ["sink"],  # it logged process_starting before the plan's error
    ],
    ids=lambda c: c[0],
)
@pytest.mark.slow
def test_a_malformed_plan_is_a_one_line_user_error_naming_key_and_value(
    tmp_path: Path, command: list[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(BAD_PLAN, encoding="utf-8")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens: []\n", encoding="utf-8")
    env = user_env(
        tmp_path / "data",
        CHAINWATCH_ENGINE__PLAN=str(plan),
        # nothing listens there: the plan must be refused before anything talks to Kafka
        CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9",
    )
    args = [str(tokens) if a == "TOKENS" else a for a in command]
    result = run_cli(*args, env=env, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: SLA plan {plan}: plan key 'handoff'"), lines[0]
    assert "got 12" in lines[0]
    assert "{value" not in lines[0]
    assert "internal error" not in lines[0]


@pytest.mark.slow
def test_make_clean_data_deletes_the_configured_data_dir_and_nothing_else(
    tmp_path: Path,
) -> None:
    if shutil.which("make") is None:
        pytest.skip("no make on PATH")
    project = tmp_path / "clone"
    project.mkdir()
    shutil.copy(ROOT / "Makefile", project / "Makefile")
    (project / ".venv").symlink_to(ROOT / ".venv")
    default_dir = project / ".chainwatch"
    default_dir.mkdir()
    (default_dir / "keep").write_text("not the configured data dir", encoding="utf-8")
    data = tmp_path / "my-data"
    (data / "kafka").mkdir(parents=True)
    (data / "kafka" / "meta.properties").write_text("x", encoding="utf-8")
    env = user_env(
        data,
        CHAINWATCH_KAFKA__LOCAL_PORT="29982",
        CHAINWATCH_KAFKA__LOCAL_CONTROLLER_PORT="29983",
    )

    done = subprocess.run(
        ["make", "clean-data"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert not data.exists()
    assert (default_dir / "keep").exists()
    refused = subprocess.run(
        ["make", "clean-data"],
        cwd=project,
        env={**env, "CHAINWATCH_DATA_DIR": str(project)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0
    assert (project / "Makefile").exists()


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.integration  # opens the embedded ClickHouse
@pytest.mark.parametrize(
    "command", [["sql", "SELECT count() FROM alerts_current"], ["status", "--once"]]
)
def test_a_fresh_store_says_run_db_migrate(tmp_path: Path, command: list[str]) -> None:
    env = user_env(tmp_path / "data", CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9")
    line = _one_line(run_cli(*command, env=env, timeout=90))
    assert "run `chainwatch db migrate`" in line
    assert "UNKNOWN_TABLE" not in line
    assert not (tmp_path / "data" / "clickhouse").exists()  # a read path never writes


@pytest.mark.slow
def test_an_unreachable_clickhouse_url_is_one_short_line(tmp_path: Path) -> None:
    env = user_env(tmp_path / "data", CHAINWATCH_CLICKHOUSE__URL="http://u:pw@127.0.0.1:9/db")
    line = _one_line(run_cli("sql", "SELECT 1", env=env, timeout=90))
    assert line == (
        "error: cannot reach ClickHouse at http://u:***@127.0.0.1:9/db (connection refused); "
        "check CHAINWATCH_CLICKHOUSE__URL"
    )


@pytest.mark.integration  # doctor opens the embedded ClickHouse (no broker)
def test_with_kafka_down_replay_and_doctor_say_so_quickly_without_library_noise(
    tmp_path: Path,
) -> None:
    env = user_env(
        tmp_path / "data",
        CHAINWATCH_KAFKA__LOCAL_PORT="29972",  # the managed broker's port, with no broker there
        CHAINWATCH_KAFKA__LOCAL_CONTROLLER_PORT="29973",
        CHAINWATCH_KAFKA__PROBE_TIMEOUT_S="1",  # waited out by both (3 s by default)
    )
    started = time.monotonic()
    replay = run_cli("replay", "examples/example_1_on_time.ndjson", env=env, timeout=60)
    replay_s = time.monotonic() - started
    assert _one_line(replay) == (
        "error: Kafka at 127.0.0.1:29972 does not answer; start it with `chainwatch kafka start`"
    )
    assert replay_s < 30, replay_s  # the probe's own deadline is 1 s here (+2 s to close)

    doctor = run_cli("doctor", env=env, timeout=90)
    assert doctor.returncode == 1
    assert doctor.stderr == "", doctor.stderr  # no kafka-python connection errors
    kafka_line = next(line for line in doctor.stdout.splitlines() if " kafka " in line)
    assert "no answer from 127.0.0.1:29972; run `chainwatch kafka start`" in kafka_line
    assert "\x1b" not in doctor.stdout  # Maven's colour codes are stripped


@pytest.mark.slow  # a CLI process and one connection attempt of kafka-python's
def test_sink_drain_with_kafka_down_says_so_without_library_noise(tmp_path: Path) -> None:
    """kafka-python's three connection errors came before the one line of ours."""
    env = user_env(
        tmp_path / "data",
        CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9",
        CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S="2",  # its one attempt (15 s by default)
    )
    drain = run_cli("sink", "--drain", env=env, timeout=90)
    assert drain.returncode == 1
    noise = [line for line in drain.stderr.splitlines() if "[kafka" in line]
    assert noise == [], drain.stderr
    last = drain.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach Kafka at 127.0.0.1:9 "), drain.stderr
