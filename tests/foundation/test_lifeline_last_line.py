"""A child whose parent died says `process_stopped` once, last, in every order of events
(chainwatch.lifeline): the watch's thread against the process's own stop handling.

The watch looked at SIGTERM's handler, said the line of a stop "at once" and then sent
SIGTERM: a process that put its own handler in place in between took the signal for a
graceful stop and said the line once more. Driven here in-process, each order forced by
events: the watch's thread runs on a pipe whose write end is closed (the parent gone);
the exit and the handler SIGTERM had until the process's own are stand-ins that record.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from chainwatch import lifeline
from chainwatch.lifeline import PARENT_GONE_EXIT
from chainwatch.process import process_lifetime

WAIT_S = 10.0
"""For what happens in a moment: far past it on a loaded machine."""


@dataclass
class Child:
    """This process as a child watching its parent, with what its exit and its handlers
    were asked to do."""

    exits: list[int] = field(default_factory=list)
    early_sigterms: list[int] = field(default_factory=list)
    """SIGTERMs the handler the process had until its own took (`_until_own_stop_handling`)."""
    own_sigterms: list[int] = field(default_factory=list)
    own_signalled: threading.Event = field(default_factory=threading.Event)
    after_line: Callable[[], None] = lambda: None
    """Run in the watch's thread as soon as it said `process_stopped`."""

    def own_handler(self, signum: int, _frame: object) -> None:
        """The process's own stop handling: its graceful stop follows (said by the test)."""
        self.own_sigterms.append(signum)
        self.own_signalled.set()

    def parent_dies(self) -> threading.Thread:
        """The watch's thread, seeing its parent gone (end-of-file at once)."""
        read_end, write_end = os.pipe()
        os.close(write_end)

        def watch() -> None:
            try:
                lifeline._wait_for_death(read_end, "test")
            finally:
                os.close(read_end)

        thread = threading.Thread(target=watch, name="lifeline-test", daemon=True)
        thread.start()
        return thread


class _HookedLog:
    """The lifeline's logger, running `hook` after each line it says."""

    def __init__(self, real: Any, hook: Callable[[str], None]) -> None:
        self._real = real
        self._hook = hook

    def info(self, event: str, **fields: Any) -> None:
        self._real.info(event, **fields)
        self._hook(event)

    def warning(self, event: str, **fields: Any) -> None:
        self._real.warning(event, **fields)
        self._hook(event)


@pytest.fixture
def child(monkeypatch: pytest.MonkeyPatch) -> Iterator[Child]:
    watched = Child()

    def early(signum: int, _frame: object) -> None:
        watched.early_sigterms.append(signum)

    monkeypatch.setattr(lifeline, "_parent_gone", threading.Event())
    monkeypatch.setattr(lifeline, "_said_by", None, raising=False)  # a fresh process's
    monkeypatch.setattr(lifeline, "_unsaid", None)  # the stand-in handler tells it nothing
    monkeypatch.setattr(lifeline, "_until_own_stop_handling", early)
    monkeypatch.setattr(lifeline.os, "_exit", watched.exits.append)

    def hook(event: str) -> None:
        if event == "process_stopped":
            watched.after_line()

    monkeypatch.setattr(lifeline, "log", _HookedLog(lifeline.log, hook))
    before = signal.signal(signal.SIGTERM, early)  # as `watch_parent` puts it in place
    try:
        yield watched
    finally:
        signal.signal(signal.SIGTERM, before)


def _stopped(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == "process_stopped"]


def test_a_handler_put_in_place_just_after_the_watch_said_its_line_gets_no_stop(
    child: Child,
) -> None:
    """The watch has said the line of a stop at once; the process puts its own handler
    in place right then, and its own stop ends later (by itself, or as the exit comes):
    the watch's line stays the only one and the last, and the process exits at once."""
    said, installed = threading.Event(), threading.Event()

    def process_installs_its_handler_now() -> None:
        said.set()
        assert installed.wait(WAIT_S)

    child.after_line = process_installs_its_handler_now
    with capture_logs() as logs:
        watch = child.parent_dies()
        assert said.wait(WAIT_S)
        signal.signal(signal.SIGTERM, child.own_handler)
        installed.set()
        watch.join(WAIT_S)
        assert not watch.is_alive()
        with process_lifetime("test", announced=True):  # its own stop, and its last line
            pass
    (stopped,) = _stopped(logs)
    assert child.own_sigterms == []  # no graceful stop begun by the watch
    assert child.exits == [PARENT_GONE_EXIT]
    assert stopped["stopped"] == "at once, before its own stop handling"
    assert logs[-1] is stopped


def test_a_process_with_its_own_handler_in_place_says_the_line_of_its_graceful_stop(
    child: Child,
) -> None:
    signal.signal(signal.SIGTERM, child.own_handler)
    with capture_logs() as logs:
        watch = child.parent_dies()
        assert child.own_signalled.wait(WAIT_S)  # its handler runs in this, the main thread
        with process_lifetime("test", announced=True):
            pass
        watch.join(WAIT_S)
        assert not watch.is_alive()
    assert (child.own_sigterms, child.early_sigterms, child.exits) == ([signal.SIGTERM], [], [])
    (stopped,) = _stopped(logs)
    assert stopped["outcome"] == f"exit {PARENT_GONE_EXIT}"
    assert "stopped" not in stopped
    assert logs[-1] is stopped


def test_a_process_that_said_its_last_line_is_not_given_a_second_one(child: Child) -> None:
    """Its stop ended and put back the handler it had before (`_until_own_stop_handling`),
    then the parent died before the process exited: it exits at once, nothing said."""
    delivered = threading.Event()
    child.early_sigterms = _Noting(delivered)
    with capture_logs() as logs:
        with process_lifetime("test", announced=True):
            pass
        watch = child.parent_dies()
        assert delivered.wait(WAIT_S)  # the handler it has now: the exit at once
        watch.join(WAIT_S)
        assert not watch.is_alive()
    assert child.exits == []  # not from the watch's thread: the handler's
    (stopped,) = _stopped(logs)
    assert stopped["outcome"] == "ok"  # said before the parent died
    assert logs[-1] is stopped


def test_a_process_that_said_its_last_line_with_its_own_handler_in_place_gets_the_signal(
    child: Child,
) -> None:
    """Its stop said the line, its own handler still in place (faust's until the loop
    closes), then the parent died: the watch signals it (`_step`: said, OWN), says
    nothing and does not end it; what SIGTERM does now is the process's own."""
    signal.signal(signal.SIGTERM, child.own_handler)
    with capture_logs() as logs:
        with process_lifetime("test", announced=True):
            pass
        watch = child.parent_dies()
        watch.join(WAIT_S)
        assert not watch.is_alive()
        assert child.exits == []  # not ended by the watch, nor a second line said
        assert child.own_signalled.wait(WAIT_S)  # its handler runs in this, the main thread
    assert (child.own_sigterms, child.early_sigterms) == ([signal.SIGTERM], [])
    (stopped,) = _stopped(logs)
    assert stopped["outcome"] == "ok"  # said before the parent died
    assert logs[-1] is stopped


class _Noting(list[int]):
    """A list that sets `event` as it is appended to."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self._event = event

    def append(self, item: int) -> None:
        super().append(item)
        self._event.set()
