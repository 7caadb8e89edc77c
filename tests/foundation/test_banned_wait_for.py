"""Ruff bans every spelling of `asyncio.wait_for` outside tests (pyproject, TID251).

Python 3.11's `wait_for` drops a cancellation that comes as the awaited call ends
(CPython gh-86296). The ban named `asyncio.wait_for` only, and TID251 matches the
qualified name as imported: `from asyncio import tasks; tasks.wait_for(...)` passed.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio\nasyncio.wait_for",
        "from asyncio import wait_for\nwait_for",
        "from asyncio import tasks\ntasks.wait_for",
        "import asyncio.tasks\nasyncio.tasks.wait_for",
        "from asyncio.tasks import wait_for\nwait_for",
    ],
)
def test_ruff_refuses_wait_for_however_it_is_imported(source: str) -> None:
    checked = subprocess.run(
        [str(RUFF), "check", "--select", "TID251", "--stdin-filename", "streams/x.py", "-"],
        input=source + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert "TID251" in checked.stdout, checked.stdout + checked.stderr


def test_the_ban_names_the_helper_to_use_and_it_exists() -> None:
    """`asyncio.timeout` is no drop-in around aiokafka (its closes swallow a cancel of
    the caller's task): the message points at `schemas.deadline.deadline`."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    banned = config["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-api"]
    for name in ("asyncio.wait_for", "asyncio.tasks.wait_for"):
        assert "schemas.deadline.deadline" in banned[name]["msg"], name
    assert callable(importlib.import_module("schemas.deadline").deadline)
