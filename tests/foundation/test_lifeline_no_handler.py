"""A child whose parent dies while SIGTERM has no handler at all ends with its last line
and `PARENT_GONE_EXIT` (chainwatch.lifeline), not by the signal.

faust's worker closes its event loop at the end of its stop, and asyncio then puts
SIGTERM's default back, for the rest of the worker's stop (the ops server's stop, its
`process_stopped`). The watch sent SIGTERM to a process with no handler: the default
ended it by the signal, status -15, its `process_stopped` never said (or said, and the
status not the 4 its parent-gone stop exits with). Here a child does what the worker
does, with a real pipe whose write end this test holds as its parent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from readable import line_within

from chainwatch.lifeline import PARENT_GONE_EXIT

ROOT = Path(__file__).resolve().parents[2]

WAIT_S = 60.0
"""For a child to start (imports) or end: far past it on a loaded machine."""

#: The worker's end of its stop: faust's loop closed (SIGTERM's default back), then the
#: rest of `process_lifetime`, here before (`said=0`) or after (`said=1`) its last line.
CHILD = """
import asyncio, signal, sys, threading
from chainwatch import lifeline
from chainwatch.logs import configure_logging
from chainwatch.process import process_lifetime

configure_logging(fmt="json")
lifeline.watch_parent(int(sys.argv[1]), "worker")
said = sys.argv[2] == "1"

def parent_may_die():
    print("ready", flush=True)  # its log is on stderr
    threading.Event().wait(float(sys.argv[3]))  # until the parent's death ends it

with process_lifetime("worker", announced=True):
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, loop.stop)  # faust's worker
    loop.close()  # at the end of its stop: SIGTERM's default back
    if not said:
        parent_may_die()  # as the ops server stops
if said:
    parent_may_die()  # as the process exits
"""


def _events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("said", [False, True], ids=["before-its-line", "after-its-line"])
def test_a_child_with_no_sigterm_handler_ends_with_its_last_line_and_parent_gone_status(
    said: bool,
) -> None:
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(read_end), str(int(said)), str(WAIT_S)],
            pass_fds=(read_end,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,  # "ready" alone
            stderr=subprocess.PIPE,  # its log
            text=True,
            cwd=ROOT,
        )
    finally:
        os.close(read_end)
    try:
        ready = line_within(child.stdout, WAIT_S, "the child's first line")
        assert ready == "ready\n", ready + child.communicate(timeout=WAIT_S)[1]
        os.close(write_end)  # the parent dies
        write_end = -1
        out = child.communicate(timeout=WAIT_S)[1]  # its log (stderr)
    finally:
        if write_end >= 0:
            os.close(write_end)
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == PARENT_GONE_EXIT, out
    stopped = [e for e in _events(out) if e["event"] == "process_stopped"]
    assert len(stopped) == 1, out
    assert _events(out)[-1] == stopped[0], out
    assert stopped[0]["outcome"] == ("ok" if said else f"exit {PARENT_GONE_EXIT}"), out
