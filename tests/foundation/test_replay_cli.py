"""`chainwatch replay` as a user runs it: results on stdout, a quiet stderr (issue 11, item 5).

Topic creation followed by an immediate publish makes aiokafka warn about
`NotLeaderForPartitionError` retries, and the result reader logs `group_id is
None`; those lines go to the replay's log file, not to the user's terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "example_1_on_time.ndjson"
EXPECTED = ROOT / "examples" / "expected_1_on_time.ndjson"


@pytest.mark.integration
@pytest.mark.slow
def test_replay_prints_alerts_on_stdout_and_keeps_library_logs_off_stderr(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINWATCH_")}
    env |= {
        "CHAINWATCH_DATA_DIR": str(tmp_path),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chainwatch",
            "replay",
            str(EXAMPLE),
            "--until",
            "2027-03-31T00:00:00Z",
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
    expected = [orjson.loads(line) for line in EXPECTED.read_text().splitlines() if line]
    assert sorted(a["alert_id"] for a in alerts) == sorted(a["alert_id"] for a in expected)
    for noise in ("NotLeaderForPartition", "group_id is None", "WARNING", "Traceback"):
        assert noise not in result.stderr, result.stderr
    assert "dead letters:" in result.stderr
    log_line = next(line for line in result.stderr.splitlines() if "client-library log:" in line)
    assert Path(log_line.split("client-library log:", 1)[1].strip()).parent.is_dir()
