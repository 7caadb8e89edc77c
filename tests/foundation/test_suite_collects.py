"""Any subset of the suite's directories collects, in any order.

pytest (prepend import mode, no `__init__.py`) imports each test directory's modules
as top-level modules, and every conftest.py as the one module `conftest`, replaced
as the next is loaded. So a test module that imported a helper `from conftest`
got whichever conftest was loaded last: `pytest tests/gateway tests/dashboards`
(each directory named loads its conftest before anything is collected) failed to
collect 22 gateway modules, `cannot import name 'Harness' from 'conftest'
(tests/dashboards/conftest.py)`, though each directory and the whole suite passed.
The two checks here hold the cause; collecting the directories together in a
subprocess proved the same at ~18 s of the suite's time, and was not kept.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


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
