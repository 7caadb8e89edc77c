"""A conftest.py that runs the suite's own `pytest_configure` (tests/conftest.py) in a
pytest started on a folder of its own: how the tests of the suite's start-up (its
SIGTERM handling, its port check) run that code as the suite runs it, without the
suite's fixtures or brokers."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SUITE_HOOK_CONFTEST = f"""
import importlib.util
import sys

sys.path.insert(0, {str(TESTS)!r})
_spec = importlib.util.spec_from_file_location("suite_conftest", {str(TESTS / "conftest.py")!r})
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
pytest_configure = _suite.pytest_configure  # the suite's hook, as the suite runs it
"""


def hook_env(**extra: str) -> dict[str, str]:
    """The environment for such a pytest: this session's own PYTEST_ variables left out
    (xdist's worker names would be read as the child's), and no plugin autoloaded.

    The hook is pytest's `pytest_configure` with the conftest's imports: it needs no
    plugin, and loading the installed ones (schemathesis, hypothesis, anyio, ...) took
    ~3 of the child's ~4 s on a quiet machine, twice that under load.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **extra}
