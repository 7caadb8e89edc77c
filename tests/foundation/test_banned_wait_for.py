"""Ruff bans every spelling of `asyncio.wait_for` outside tests (pyproject, TID251).

Python 3.11's `wait_for` drops a cancellation that comes as the awaited call ends
(CPython gh-86296). The ban named `asyncio.wait_for` only, and TID251 matches the
qualified name as imported: `from asyncio import tasks; tasks.wait_for(...)` passed.
"""

from __future__ import annotations

import subprocess
import sys
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
