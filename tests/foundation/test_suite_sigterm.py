"""The suite's own SIGTERM handling (tests/conftest.py): a killed run still tears down.

What the fixtures start (brokers, workers, gateways) is stopped by their
finalizers; a SIGTERM that ended Python at once skipped them all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from suite_hook import SUITE_HOOK_CONFTEST, hook_env

TEST_FILE = """
import os
import signal
from pathlib import Path

import pytest

@pytest.fixture(scope="session")
def started(tmp_path_factory):
    marker = Path(os.environ["MARKER"])
    yield
    marker.write_text("torn down")

def test_killed(started):
    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError("SIGTERM did not stop the test")
"""


def test_sigterm_stops_the_session_and_runs_the_finalizers(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(SUITE_HOOK_CONFTEST)
    (tmp_path / "test_killed.py").write_text(TEST_FILE)
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:cov", "-o", "addopts=", str(tmp_path)],
        cwd=tmp_path, env=hook_env(MARKER=str(marker)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr  # pytest's "interrupted"
    assert "SIGTERM: stopping, fixtures tear down" in done.stdout
    assert marker.read_text() == "torn down"
