"""bench/ scripts loaded as modules, so that tests check the code the benches run (they
are scripts, not a package: `import bench.fleet` would not find them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str, module_name: str) -> ModuleType:
    """`bench/<name>.py` as the module `module_name` (registered in `sys.modules`, where
    dataclasses and pickling look their module up)."""
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
