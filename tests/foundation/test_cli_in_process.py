"""The in-process CLI runner's answer holds the command's output, not other threads' logs."""

from __future__ import annotations

import threading

import pytest
import structlog
from cli_in_process import cli_in_process


def test_a_line_another_thread_logs_meanwhile_is_not_the_commands_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A notifier a test ran logged while `silences list` ran in-process, and the list's
    stdout began with that dated line (read as a silence's id)."""

    def command(argv: list[str]) -> int:
        logged = threading.Thread(
            target=structlog.get_logger("chainwatch.notifier").warning, args=("webhook_slow",)
        )
        logged.start()
        logged.join(timeout=10)
        assert not logged.is_alive()
        print("the command's answer")
        return 0

    monkeypatch.setattr("chainwatch.cli.main", command)
    answer = cli_in_process(["silences", "list"], {}, monkeypatch, capsys, settings_built=True)
    assert answer.stdout == "the command's answer\n"
    assert "webhook_slow" in answer.stderr  # where a configured process logs it
