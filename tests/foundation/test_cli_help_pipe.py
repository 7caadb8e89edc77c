"""A help page whose reader stops early (`chainwatch --help | head -1`) is normal use: it
ends without a word, exit status 141, as `git`, `ls` or `yes` do when a write of theirs
finds the reader gone (they die of SIGPIPE, which the shell says as 141). It ended with
the CLI's closed-pipe error line (exit 1) when the pipe closed before click's last
newline, and with exit 1 and no word when it closed while rich wrote the page."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from child_env import environ_without_settings

from chainwatch.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args", [["--help"], ["silences", "add", "--help"], ["kafka"]], ids=["root", "command", "group"]
)
def test_a_help_page_into_a_closed_pipe_ends_silently_with_141(
    tmp_path: Path, args: list[str]
) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line (`| true`)
    env = environ_without_settings()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "chainwatch", *args],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
            env={**env, "CHAINWATCH_DATA_DIR": str(tmp_path / "data")}, cwd=ROOT,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


class _ReaderGoneAfter(io.TextIOBase):
    """A stdout whose reader stops once it has read `marker` (`head`): later writes fail
    with EPIPE, as a pipe's do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.read = ""

    def write(self, text: str) -> int:
        if self.marker in self.read:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        self.read += str(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_help_page_whose_reader_stops_before_its_last_newline_says_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rich writes the page, then click's echo writes a last newline: the reader gone
    just before it, click's broken-pipe exit was said as 'the output's reader stopped
    reading (a closed pipe)' with exit 1 (the one order a subprocess cannot force)."""
    capsys.readouterr()
    stdout = _ReaderGoneAfter("─ Commands ─")  # the root page's last panel
    monkeypatch.setattr(sys, "stdout", stdout)
    code = main(["--help"])
    monkeypatch.undo()
    assert " Usage: " in stdout.read  # the page was written, its last newline was not
    assert (code, capsys.readouterr().err) == (141, "")
