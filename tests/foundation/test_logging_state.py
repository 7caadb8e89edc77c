"""A test that sets logging up in-process leaves nothing of it to the tests after it."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import pytest
from logging_state import logging_restored

from chainwatch.logs import configure_logging, route_library_logs


def test_a_handler_on_a_capture_stream_since_closed_is_gone_after_the_test(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """What an in-process CLI command under capsys did: later tests logging (a gateway on
    a thread) got "--- Logging error ---" blocks instead of their lines."""
    root = logging.getLogger()
    handlers, level = _ours(root), root.level
    capture = io.StringIO()
    with logging_restored():
        with contextlib.redirect_stderr(capture):
            configure_logging("debug", "json")
        capture.close()
    logging.getLogger("chainwatch.later_test").warning("a later test's line")
    assert "Logging error" not in capfd.readouterr().err
    assert (_ours(root), root.level) == (handlers, level)


def _ours(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers but pytest's capture handlers of the test's phase (configure_logging
    dropped them; pytest adds new ones for the next phase)."""
    return [h for h in logger.handlers if type(h).__name__ != "LogCaptureHandler"]


def test_library_logs_routed_to_a_file_propagate_again_and_the_file_is_closed(
    tmp_path: Path,
) -> None:
    kafka = logging.getLogger("kafka")
    before = (list(kafka.handlers), kafka.propagate)
    with logging_restored():
        route_library_logs(tmp_path / "libraries.log")
        logging.getLogger("kafka.conn").warning("routed")
        (routed,) = kafka.handlers
        assert isinstance(routed, logging.FileHandler)
        assert routed.stream is not None
    assert routed.stream is None  # closed: no descriptor left open
    assert (list(kafka.handlers), kafka.propagate) == before
