"""The schemathesis CLI against a running gateway: the OpenAPI document tells the truth.

All checks, all phases, a fixed seed and a bounded number of examples; any
finding fails the test. The CLI runs from its own virtual environment
(`.venv-st`, made by `make install` or here on first use): in the project's
environment urllib3-future (niquests, via grafana-client) shadows urllib3 and
breaks the `requests` transport the CLI is built on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gateway_harness import Harness, token_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TOOL_VENV = Path(os.environ.get("CHAINWATCH_SCHEMATHESIS_VENV", ROOT / ".venv-st"))
REQUIREMENTS = Path(__file__).with_name("schemathesis-requirements.txt")
CONFIG = Path(__file__).with_name("schemathesis.toml")
HOOKS = "schemathesis_hooks"
"""`tests/gateway/schemathesis_hooks.py`: the partial operations' stand-in for a check."""
"""The pinned CLI; `make install` builds the same environment alongside the project's."""


def schemathesis_cli() -> Path:
    """`st` of the tool's own environment, made on first use (pinned version)."""
    st = TOOL_VENV / "bin" / "st"
    if st.exists():
        return st
    subprocess.run([sys.executable, "-m", "venv", str(TOOL_VENV)], check=True, timeout=300)
    subprocess.run(
        [
            str(TOOL_VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
        timeout=900,
    )
    return st


@pytest.fixture(scope="module")
def fuzzed(gateway_factory: Callable[..., Harness]) -> Harness:
    return gateway_factory(max_items=20, max_body_bytes=32 * 1024)


def test_the_schemathesis_cli_finds_nothing(fuzzed: Harness, tmp_path: Path) -> None:
    st = schemathesis_cli()
    command = [
        str(st), "--config-file", str(CONFIG), "run", f"{fuzzed.base_url}/openapi.json",
        # Every check (the default; `--checks all` would override the per-operation
        # exceptions of schemathesis.toml, each given with its reason there).
        "--phases", "examples,coverage,fuzzing,stateful",
        # One pass of a fixed size (no --max-time: a time budget makes the CLI repeat the
        # fuzzing and stateful phases until it is spent, 45 s of every run, and how much
        # it tried depended on the machine's load; a seeded pass is the same on every run).
        "--max-examples", "5",
        "--seed", "20261130",
        "--workers", "1",
        "--request-timeout", "30",
        "--header", f"Authorization: Bearer {token_of('admin')}",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": HOOKS,
        # the hooks, and tests/ast_serialised.py (the hooks install its lock there too)
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])]),
        "NO_COLOR": "1",
    }
    # The CLI keeps a crash cache in `.schemathesis/` of its working directory and replays
    # it on the next run: a directory of this run's own keeps runs independent (and the
    # checkout clean); `st replay <id>` works from there.
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    (tmp_path / "out.txt").write_text(result.stdout + result.stderr)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
