"""One thread at a time turns source into an AST, in the test process and schemathesis's.

On CPython 3.11 before the fix of gh-106905 (this machine and CI run 3.11.7), two
threads building Python AST objects at once corrupt the interpreter's shared AST depth
counter and one of them raises "SystemError: AST constructor recursion depth mismatch".
The suite runs servers (the gateway's uvicorn) in threads beside the test, and several
callers parse at any moment: the traceback module (3.11 parses the failing line to place
its carets whenever a traceback is formatted), hypothesis (describing strategies built
from lambdas), pytest's assertion rewriting (lazy imports) and anyio's lazy importer
(it parses a module's own source when the module is first imported). CI failed on this
race twice: pytest rewriting a lazily imported schemathesis module, then hypothesis
replaying a fuzz example; a helper saw it once more at schemathesis's import.

All of them go through `ast.parse`, except anyio, which calls `compile` with
`PyCF_ONLY_AST` itself: both are wrapped with one lock.

The lock alone did not end it (CI failed twice more on 2026-12-01, at hypothesis's and
schemathesis's lazy imports): one thread can nest a parse inside its own parse. Building
the AST allocates, an allocation can start the cyclic garbage collector, the collector runs
finalizers, and a finalizer that warns (an unclosed event loop's `ResourceWarning`, an
error in this suite) goes to pytest's unraisable hook, which formats a traceback - and
3.11's traceback module parses. The re-entrant lock lets the nested parse through, and
the outer one fails with the same message (reproduced in a few lines: a `__del__` that
parses, on objects in reference cycles, while a large source is parsed). So the
collector is also paused for the length of a parse. Parsing is rare and short, so the
lock and the pause cost nothing measurable. (No `from __future__` import here: `compile`
called from this module must not inherit flags of its own.)
"""

import ast
import functools
import gc
import sys
import threading
from typing import Any

_LOCK = threading.RLock()


def _fixed_upstream() -> bool:
    return sys.version_info >= (3, 12, 1) or (3, 11, 8) <= sys.version_info < (3, 12)


def _serialised(function: Any) -> Any:
    if getattr(function, "__ast_serialised__", False):
        return function

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            collecting = gc.isenabled()
            gc.disable()  # no finalizer may parse inside this parse (see the docstring)
            try:
                return function(*args, **kwargs)
            finally:
                if collecting:
                    gc.enable()

    call.__ast_serialised__ = True  # type: ignore[attr-defined]
    return call


def serialise_ast_parsing() -> None:
    """Install the lock (idempotent; nothing on a Python with the fix)."""
    if _fixed_upstream():
        return
    ast.parse = _serialised(ast.parse)
    try:
        from anyio import _lazyimport
    except ImportError:  # an anyio without the lazy importer parses nothing
        return
    # Only `_build_lazy_map` calls `compile` there, always with PyCF_ONLY_AST and
    # explicit flags; a module global shadows the builtin for that module alone.
    _lazyimport.compile = _serialised(compile)  # type: ignore[attr-defined]
