"""Any subset of the suite's directories collects, in any order.

pytest (prepend import mode, no `__init__.py`) imports each test directory's modules
as top-level modules, and every conftest.py as the one module `conftest`, replaced
as the next is loaded. So a test module that imported a helper `from conftest`
got whichever conftest was loaded last: `pytest tests/gateway tests/dashboards`
(each directory named loads its conftest before anything is collected) failed to
collect 22 gateway modules, `cannot import name 'Harness' from 'conftest'
(tests/dashboards/conftest.py)`, though each directory and the whole suite passed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "data" not in p.relative_to(TESTS).parts)


def test_no_module_of_the_suite_imports_a_conftest() -> None:
    importing = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n.split(".")[0] == "conftest" for n in names):
                importing.append(str(path.relative_to(TESTS)))
    assert importing == []


def test_every_module_of_the_suite_has_a_name_of_its_own() -> None:
    """Helpers are imported by their file's name (`from samples import ...`): two of a
    name would be one module, whichever was imported first."""
    counts = Counter(p.name for p in _modules() if p.name != "conftest.py")
    assert [name for name, n in counts.items() if n > 1] == []


@pytest.mark.slow
def test_the_directories_with_a_conftest_collect_together_in_either_order() -> None:
    directories = sorted(str(p.parent.relative_to(ROOT)) for p in TESTS.glob("*/conftest.py"))
    assert len(directories) >= 2, directories
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    for order in (directories, directories[::-1]):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "-p", "no:xdist", "-p", "no:cov", *order],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
