"""The suite's waits for something to read: descriptors past select()'s 1024, and a
child's first line within a deadline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from readable import line_within, readable_within


def test_a_socket_numbered_past_1024_is_waited_on() -> None:
    """One xdist session running half the suite holds more than 1024 descriptors (chDB's
    threads); `select.select` raised "filedescriptor out of range" on the next socket."""
    writer, reader = socket.socketpair()
    high = os.dup2(reader.fileno(), 1100)
    try:
        assert not readable_within(high, 0.05)
        writer.sendall(b"x")
        assert readable_within(high, 10)
    finally:
        os.close(high)
        writer.close()
        reader.close()


def test_a_childs_first_line_is_waited_for_within_a_deadline_that_names_the_child() -> None:
    """A bare `readline()` on a child stuck before its first line waited until pytest's
    own timeout (300 s), which names no cause."""
    code = (
        "import sys; line = sys.stdin.readline(); print(line.strip(), flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        try:
            with pytest.raises(AssertionError, match=r"^the echo: no line within 0.2 s$"):
                line_within(child.stdout, 0.2, "the echo")
            child.stdin.write(b"ready\n")
            child.stdin.flush()
            assert line_within(child.stdout, 60, "the echo") == b"ready\n"
        finally:
            child.kill()


def test_a_child_stuck_halfway_through_its_first_line_is_named_with_what_it_wrote() -> None:
    """Waiting for the first byte only, `readline()` then blocked on the rest of a line
    the child never finished, again until pytest's own timeout."""
    code = "import sys; sys.stdout.write('hal'); sys.stdout.flush(); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as child:
        assert child.stdout is not None
        try:
            assert readable_within(child.stdout, 60), "the child wrote nothing"
            with pytest.raises(
                AssertionError, match=r"^the half line: no line within 0.3 s \(only b'hal'\)$"
            ):
                line_within(child.stdout, 0.3, "the half line")
        finally:
            child.kill()


def test_a_text_pipe_gives_text_and_a_child_that_ends_gives_what_it_wrote() -> None:
    code = "import sys; sys.stdout.write('ready'); sys.stdout.flush()"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        assert line_within(child.stdout, 60, "the child") == "ready"
