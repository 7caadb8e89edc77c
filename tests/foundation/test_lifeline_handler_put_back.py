"""A child whose parent dies as its wait before its main part ends says `process_stopped`
once, last (chainwatch.lifeline), when the watch's SIGTERM finds the handler it looked
at gone.

The watch looked at SIGTERM's handler: the process's own (`waiting_before_main`'s), so
it sent SIGTERM for the graceful stop that handler begins. The wait ended before the
signal came and put back the handler it had had, the lifeline's, which then took the
signal and ended the process at once: exit 4 with no `process_stopped` said by anyone.
The child here forces that order: the watch waits, right after its look, until the
main thread has left the wait.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from chainwatch.lifeline import PARENT_GONE_EXIT

ROOT = Path(__file__).resolve().parents[2]

WAIT_S = 60.0
"""For a child to start (imports) and end: far past it on a loaded machine."""

CHILD = """
import os, select, signal, sys, threading
from chainwatch import lifeline
from chainwatch.logs import configure_logging
from chainwatch.process import waiting_before_main

configure_logging(fmt="json")
wait_s = float(sys.argv[1])
read_end, write_end = os.pipe()  # this process is its own parent's stand-in
lifeline.watch_parent(read_end, "sink")
# A signal writes a byte here: a wait for it cannot miss one that came just before (its
# handler would run only after a blocking call begun right then had ended)
signalled, signal_byte = os.pipe()
os.set_blocking(signal_byte, False)
signal.set_wakeup_fd(signal_byte)
looked, left = threading.Event(), threading.Event()
real = lifeline.log

class AfterTheLook:
    def warning(self, event, **fields):
        real.warning(event, **fields)
        if event == "process_parent_gone":  # the watch has looked: the process's own handler
            looked.set()
            left.wait(wait_s)

    def info(self, event, **fields):
        real.info(event, **fields)

lifeline.log = AfterTheLook()
with waiting_before_main("sink", None):
    os.close(write_end)  # the parent dies while the process waits
    looked.wait(wait_s)
left.set()  # the wait is over, the lifeline's handler back: the watch's SIGTERM comes now
select.select([signalled], [], [], wait_s)  # before its main part puts its own handler in place
threading.Event().wait(wait_s)  # its handler has run: what ends the process follows
"""


def test_a_sigterm_its_own_handler_missed_still_ends_the_child_with_its_last_line() -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(WAIT_S)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=3 * WAIT_S,
        cwd=ROOT,
    )
    said = child.stdout + child.stderr
    events = [json.loads(line) for line in child.stderr.splitlines() if line.startswith("{")]
    assert child.returncode == PARENT_GONE_EXIT, said
    stopped = [e for e in events if e["event"] == "process_stopped"]
    assert len(stopped) == 1, said
    assert events[-1] == stopped[0], said
    assert stopped[0]["outcome"] == f"exit {PARENT_GONE_EXIT}", said
    assert [e["event"] for e in events].count("process_parent_gone") == 1, said
