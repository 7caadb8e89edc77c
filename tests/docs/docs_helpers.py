"""Running `chainwatch` as a user would: a subprocess with its own environment and a deadline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from child_env import environ_without_settings

ROOT = Path(__file__).resolve().parents[2]


def user_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any CHAINWATCH_ setting, plus a private data dir."""
    env = environ_without_settings()
    env["CHAINWATCH_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
