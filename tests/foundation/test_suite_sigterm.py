"""The suite's own SIGTERM handling (tests/conftest.py): a killed run still tears down.

What the fixtures start (brokers, workers, gateways) is stopped by their
finalizers; a SIGTERM that ended Python at once skipped them all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent

CONFTEST = f"""
import importlib.util
import sys

sys.path.insert(0, {str(TESTS)!r})
_spec = importlib.util.spec_from_file_location("suite_conftest", {str(TESTS / "conftest.py")!r})
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
pytest_configure = _suite.pytest_configure  # the suite's hook, as the suite runs it
"""

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
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_killed.py").write_text(TEST_FILE)
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:cov", "-o", "addopts=", str(tmp_path)],
        cwd=tmp_path, env={**_env(), "MARKER": str(marker)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr  # pytest's "interrupted"
    assert "SIGTERM: stopping, fixtures tear down" in done.stdout
    assert marker.read_text() == "torn down"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
