"""The suite's serialised parse survives a finalizer that parses during it.

See tests/ast_serialised.py. On CPython 3.11.7 (gh-106905) a bare `ast.parse` fails
here with "AST constructor recursion depth mismatch" most of the time; the fixed
Pythons pass either way.
"""

from __future__ import annotations

import ast
import gc
from pathlib import Path

from ast_serialised import _serialised


class _ParsesWhenCollected:
    def __init__(self, parse: object) -> None:
        self.parse = parse
        self.cycle = self

    def __del__(self) -> None:
        self.parse("x = (1 + 2) * [a for a in b]")  # type: ignore[operator]


def test_a_finalizer_that_parses_cannot_break_a_parse_in_progress() -> None:
    parse = _serialised(ast.parse)
    source = Path(ast.__file__).read_text(encoding="utf-8") * 3
    thresholds = gc.get_threshold()
    gc.set_threshold(50, 1, 1)  # collect often: inside the parse, unless it is paused
    try:
        for _ in range(20):
            for _ in range(200):
                _ParsesWhenCollected(parse)
            assert isinstance(parse(source), ast.Module)
        gc.collect()
    finally:
        gc.set_threshold(*thresholds)
