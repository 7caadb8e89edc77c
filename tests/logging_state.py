"""The process's logging set-up, put back as it was after a test that changed it.

A test that runs a CLI command in-process (`CliRunner().invoke(app, ...)`, `main([...])`)
has `configure_logging` give the root logger a handler on the `sys.stderr` of the moment:
capsys' or CliRunner's stream, closed when the test ends. Left in place, every later test
of the same process that logs (a gateway on a thread) had "--- Logging error ---" blocks
("I/O operation on closed file") in its output, and a test reading its log found them
there instead of its lines. `route_library_logs` likewise leaves file handlers (an open
file each) on the client libraries' loggers, and structlog stays configured.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog


@dataclass(frozen=True)
class _LoggerState:
    handlers: tuple[logging.Handler, ...]
    level: int
    propagate: bool
    disabled: bool


def _pytests_own(handler: logging.Handler) -> bool:
    """pytest's capture handlers (caplog's, the report's): pytest adds and removes them
    around each phase itself. Its session-wide ones (log_file, log_cli) are put back."""
    kind = type(handler)
    return kind.__module__ == "_pytest.logging" and kind.__name__ == "LogCaptureHandler"


def _loggers() -> dict[str, logging.Logger]:
    named = {
        name: logger
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger)
    }
    return {"": logging.getLogger(), **named}


def _state(logger: logging.Logger) -> _LoggerState:
    own = tuple(h for h in logger.handlers if not _pytests_own(h))
    return _LoggerState(own, logger.level, logger.propagate, logger.disabled)


@contextmanager
def logging_restored() -> Iterator[None]:
    """Every logger's handlers, level and propagation, structlog's configuration and the
    capture of warnings as they were on entry; handlers added meanwhile are closed."""
    before = {name: _state(logger) for name, logger in _loggers().items()}
    structlog_config: dict[str, Any] = structlog.get_config()
    warnings_captured = logging._warnings_showwarning is not None  # type: ignore[attr-defined]
    try:
        yield
    finally:
        kept = {h for state in before.values() for h in state.handlers}
        for name, logger in _loggers().items():
            if name not in before:  # made meanwhile (an import): a library's NullHandler stays
                streams = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
                was = _LoggerState(
                    tuple(h for h in _state(logger).handlers if h not in streams),
                    logger.level,
                    True,
                    logger.disabled,
                )
            else:
                was = before[name]
            if _state(logger) == was:
                continue
            for handler in logger.handlers:
                if not _pytests_own(handler) and handler not in kept:
                    handler.close()
            pytests = [h for h in logger.handlers if _pytests_own(h)]
            logger.handlers[:] = [*was.handlers, *pytests]
            logger.setLevel(was.level)
            logger.propagate, logger.disabled = was.propagate, was.disabled
        structlog.configure(**structlog_config)
        if not warnings_captured:
            logging.captureWarnings(False)
