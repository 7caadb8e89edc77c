"""Child processes that stop by themselves when the process that started them dies.

A `chainwatch replay` (or backtest, or bench) killed with SIGKILL (the OOM killer,
`kill -9`, a CI job's timeout) left its workers running for ever: they kept the run's
consumer group alive, so `chainwatch runs delete` refused the run as still running, and
they held their memory and CPU. A SIGKILLed `chainwatch demo` left its worker, sink,
notifier, gateway and simulator so. A process killed so runs no clean-up of its own:
the children have to notice by themselves.

How: the parent opens one pipe (`_Lifeline`) and holds its write end for the whole of
its life, never writing to it; each child it starts (`start_child`) gets the read end
and its number on its command line (`chainwatch --lifeline-fd N <command>`). In the
child a thread blocks reading it (`watch_parent`). The kernel closes a process's
descriptors however it ends, so when the parent dies the read returns end-of-file; the
child then logs `process_parent_gone` and sends itself SIGTERM: the graceful stop of
that process, with its deadline (the worker's `engine.stop_timeout_s`), as a
supervisor's SIGTERM would. Once stopped it exits `PARENT_GONE_EXIT`, not 0: it did not
end by its own choice nor by a stop anyone asked for (`exit_status`). A child with no
stop handling of its own yet (still starting; the simulator has none) is ended at once
by that thread instead, its last line (`process_stopped`) said first: one such line
whatever the process does meanwhile (`_stop`).

Why a pipe and not the alternatives:
- polling `os.getppid()` for a change: portable too, but every child wakes every second
  for ever, notices the death up to a poll late, and cannot tell a parent that died
  before its first look (the pid it sees is already the reaper's) unless told the pid;
- Linux's `prctl(PR_SET_PDEATHSIG)`: Linux only, it fires when the *thread* that
  started the child ends (not the process: a child started from a worker thread is
  signalled when that thread returns), and it only sends a signal, so the child cannot
  say why it stopped nor exit otherwise than after an ordinary SIGTERM;
- the child's stdin: a worker run by a supervisor or from a terminal has stdin on
  /dev/null or closed, and must never stop because of it.
The pipe costs no wake-up until the death, sees it at once, has no race (a parent dead
before the child looks gives end-of-file at the first read) and works wherever a child
can be handed a descriptor (`pass_fds`: Linux, macOS, every POSIX system). Windows has
no such thing (its `subprocess` refuses `pass_fds`): there a child is started without
the option, and does not stop so.

The last line, a small state machine. Three things decide what the watch does once the
parent has died, under `_last_line` so that they cannot change between its look and its
step: whether the process's last line is said (`_Said`: no, by the lifeline, by the
process), who takes SIGTERM (`_Handling`: the lifeline's handler, none at all, the
process's own) and, from these, the watch's step (`_Step`, chosen by `_step`): say the
line and end the process, end it, or signal it. Four orders of events reach them:
- the parent dies before the process has stop handling of its own, or when SIGTERM has
  none at all (faust's worker at the end of its stop): the watch says the line (unless
  said) and ends the process (`SAY_AND_END`, `END`);
- the parent dies with the process's own handler in place: the watch sends SIGTERM and
  the process's graceful stop says the line (`SIGNAL`);
- the process puts the lifeline's handler back between the watch's look and its signal:
  that handler tells the watch (`_tell_watch`, a byte on `_unsaid`) and the watch looks
  again (`_after_signal`);
- the process has said its line already: nothing more is said; the lifeline's SIGTERM
  handler, or the watch when there is none, ends it at once (`_until_own_stop_handling`,
  `END`); its own handler, still in place, gets the SIGTERM (`SIGNAL`).

It is opt-in: only a child given `--lifeline-fd` watches (hidden from `--help`: it is
for the processes chainwatch starts). It is an option, not an environment variable: an
environment variable would pass to a child's own children (`child_environment` keeps
every `CHAINWATCH_*` name that is no setting, as a user's own), which would then watch
a descriptor number that is not theirs. For the same reason the child marks the read
end not inheritable as soon as it has it.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Final

from chainwatch.errors import UsageError
from chainwatch.logs import get_logger

log = get_logger(__name__)

OPTION = "--lifeline-fd"
"""The hidden root option that makes a child watch its parent (`chainwatch.cli`)."""

_PASSES_FDS = os.name == "posix"
"""Whether a child can be handed the read end (`subprocess`'s `pass_fds`: not on Windows)."""

PARENT_GONE_EXIT = 4
"""The exit status of a child that stopped because its parent died."""


@dataclass(frozen=True, slots=True)
class _Lifeline:
    read_fd: int
    write_fd: int
    owner_pid: int
    """The process whose children it ties: a forked copy of the parent opens its own."""


_lock = threading.Lock()
_lifeline: _Lifeline | None = None
_parent_gone = threading.Event()

_last_line = threading.Lock()
"""Held to say the process's last line (`process_stopped`): by the watch when it ends a
process that has no stop handling of its own yet (until the exit: nothing is said after
it), and by the process's own stop (`say_stopped`)."""
_NO_HANDLER: Final = (signal.SIG_DFL, signal.SIG_IGN)
"""SIGTERM's handler where the process has none of its own in Python (`_stop`)."""


class _Said(enum.Enum):
    """Who said the process's last line (`process_stopped`); None while it is unsaid."""

    BY_LIFELINE = "lifeline"
    """The watch, ending the process at once: the process's own line is left out."""
    BY_PROCESS = "process"
    """The process's own stop (`say_stopped`)."""


class _Handling(enum.Enum):
    """Who takes SIGTERM when the watch looks (`_handling`)."""

    LIFELINE = "lifeline"
    """`_until_own_stop_handling`: before the process puts its own in place, after it put
    back the one it had, or always (the simulator has none of its own)."""
    NONE = "none"
    """No handler in Python (`_NO_HANDLER`): the default ends the process by the signal,
    an ignored one does nothing (faust's worker once its event loop is closed)."""
    OWN = "own"
    """The process's own stop handling: SIGTERM begins its graceful stop."""


class _Step(enum.Enum):
    """What the watch does once the parent has died (`_step`)."""

    SAY_AND_END = "say and end"
    """Say `process_stopped`, then exit `PARENT_GONE_EXIT` from the watch, at once."""
    END = "end"
    """The line is said already: exit `PARENT_GONE_EXIT` from the watch, at once."""
    SIGNAL = "signal"
    """SIGTERM: the process's own handler stops it gracefully (and says the line), the
    lifeline's ends it at once if the line is said, else tells the watch (`_unsaid`)."""


_said_by: _Said | None = None
"""Who said the last line (None: nobody yet)."""
_unsaid: tuple[int, int] | None = None
"""A pipe (read end, write end) on which `_until_own_stop_handling` tells the watch that a
SIGTERM found the process with no stop handling of its own and no last line said, its
parent gone; the watch, waiting on it after its SIGTERM, then says the line and ends the
process (`_wait_for_death`). A write is all a signal handler may safely do here."""


def _held() -> _Lifeline:
    """This process's pipe, opened at its first child and held until it dies."""
    global _lifeline
    with _lock:
        if _lifeline is None or _lifeline.owner_pid != os.getpid():
            read_fd, write_fd = (_above_stdio(fd) for fd in os.pipe())
            _lifeline = _Lifeline(read_fd, write_fd, os.getpid())
        return _lifeline


def _above_stdio(fd: int) -> int:
    """`fd` moved to 3 or above, close-on-exec (no child inherits the write end). A process
    started with stdin, stdout or stderr closed gets those numbers back from `os.pipe`: a
    child's 0-2 are its own stdio, so a read end numbered so reached it as /dev/null or its
    log (every child refused `--lifeline-fd`), and a write end so was the parent's stdio."""
    held = []
    while fd <= 2:  # os.dup: the lowest free number, not inheritable (no fcntl: portable)
        held.append(fd)
        fd = os.dup(fd)
    for low in held:
        os.close(low)
    return fd


def start_child(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log_file: IO[bytes],
    start_new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """`chainwatch ARGS` as a child process that stops once this process has died, however
    it died (on POSIX systems); stdout and stderr to `log_file`, stdin from /dev/null."""
    watch: list[str] = []
    passed: tuple[int, ...] = ()
    if _PASSES_FDS:  # Windows' subprocess refused the start: every replay worker failed
        lifeline = _held()
        watch, passed = [f"{OPTION}={lifeline.read_fd}"], (lifeline.read_fd,)
    return subprocess.Popen(
        [sys.executable, "-m", "chainwatch", *watch, *args],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        pass_fds=passed,
        start_new_session=start_new_session,
    )


def watch_parent(fd: int, process: str) -> None:
    """In a child given `--lifeline-fd fd`: stop as on SIGTERM once the parent has died.

    A descriptor that is no pipe is a usage error: the option is for the children
    chainwatch starts, which get one."""
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except (OSError, OverflowError):
        is_pipe = False
    if not is_pipe:
        raise UsageError(
            f"{OPTION} {fd}: not an open pipe (the option is for the processes chainwatch starts)"
        )
    os.set_inheritable(fd, False)  # this child's own children must not hold it
    global _said_by, _unsaid
    _said_by = None  # a process that watches says its last line from now on
    if _unsaid is None:
        _unsaid = os.pipe()  # (not inheritable)
    signal.signal(signal.SIGTERM, _until_own_stop_handling)
    threading.Thread(
        target=_wait_for_death, args=(fd, process), name="lifeline", daemon=True
    ).start()


def _until_own_stop_handling(signum: int, _frame: object) -> None:
    """SIGTERM's handler until the process puts its own in place, and after it has put
    back the one it had (and wherever it has none: the simulator). Once its parent has
    died, a SIGTERM (anyone's; the watch's to a process that has said its last line) ends
    it with `PARENT_GONE_EXIT`, at once as the default did (no clean-up, no wait for its
    threads), its lines written: the default ended it by the signal, status -15. Anyone
    else's SIGTERM before still ends it by the signal.

    Unless nothing said the process's last line yet: the watch sent SIGTERM to the
    process's own handler, and this one was put back before the signal came (the wait
    before a process's main part ended right then). Ended here, the process had no
    `process_stopped` at all; the watch says it and ends it (`_tell_watch`)."""
    if not parent_gone():  # as the default: ended by the signal
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _said_by is None and _tell_watch():
        return  # the watch says the line and ends the process (`_after_signal`)
    _flush_stdio()
    os._exit(PARENT_GONE_EXIT)


def _tell_watch() -> bool:
    """From SIGTERM's handler: tell the watch that its signal found the lifeline's handler
    and no last line said (`_unsaid`). False when it cannot be told."""
    unsaid = _unsaid
    if unsaid is None:
        return False
    try:
        os.write(unsaid[1], b"\0")
    except OSError:
        return False
    return True


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # interrupted mid-write: what it has is lost
            if stream is not None:
                stream.flush()


def _wait_for_death(fd: int, process: str) -> None:
    try:
        while os.read(fd, 1):  # the parent never writes; anything read is ignored
            pass
    except OSError as exc:  # the watch is lost, not the process: it runs on
        log.warning("process_parent_watch_failed", process=process, error=str(exc))
        return
    _parent_gone.set()
    if not _stop(process):
        _after_signal(process)


def _after_signal(process: str) -> None:
    """After the watch's SIGTERM: it went to the process's own handler, if still in place;
    if the lifeline's was put back meanwhile, that handler tells (`_tell_watch`) and the
    watch looks again, while the line is unsaid."""
    unsaid = _unsaid
    while unsaid is not None and os.read(unsaid[0], 1) and _said_by is None:
        if _stop(process, looked=True):  # (only a test's stand-in of `os._exit` returns)
            return


def _stop(process: str, *, looked: bool = False) -> bool:
    """Stop this process as SIGTERM would: through its own stop handling if it has some in
    place, else at once from here, its last line said first.

    The look at SIGTERM's handler, the line and the exit are one step under `_last_line`,
    and that exit takes no signal. A look, then a SIGTERM, let a process that put its own
    handler in place in between take the signal for its graceful stop, which said
    `process_stopped` once more, after the line said here. Now nothing the process does
    follows the line: its own `process_stopped` waits on the lock and is left out
    (`say_stopped`), and a handler it puts in place gets no signal from here. Said in
    this thread, not in a handler: one interrupts the main thread anywhere, a write to
    the log included. A process that has said its last line already (it is ending, the
    handler it had before its own put back) is told nothing more: SIGTERM ends it at
    once (`_until_own_stop_handling`), with `PARENT_GONE_EXIT`.

    A SIGTERM with no handler at all (`_NO_HANDLER`) is no stop either: its default
    ended the process by the signal (status -15; no `process_stopped` if it had not said
    it yet), and an ignored one did nothing. faust's worker has the default for the rest
    of its stop once it has closed its event loop (asyncio puts it back): the ops
    server's stop, its own `process_stopped`. Such a process is ended at once from here
    too, its line said first if it had not said it.

    `looked`: once more, after a SIGTERM the process's own handler did not get
    (`_unsaid`), `process_parent_gone` said already. True when it ended the process."""
    global _said_by
    with _last_line:
        # the look first; the lifeline's handler put back after it is found by the
        # SIGTERM, which tells the watch (`_tell_watch`)
        handling = _handling()
        if _said_by is None and not looked:
            # no parent pid: one that died before this child looked had left it the
            # reaper's
            log.warning(
                "process_parent_gone",
                process=process,
                hint="the process that started it died (killed?); stopping as on SIGTERM",
            )
        step = _step(_said_by, handling)
        if step is _Step.SAY_AND_END:
            _said_by = _Said.BY_LIFELINE
            log.info(
                "process_stopped",
                process=process,
                outcome=f"exit {PARENT_GONE_EXIT}",
                stopped="at once, with no stop handling in place"
                if handling is _Handling.NONE
                else "at once, before its own stop handling",
            )
        at_once = step is not _Step.SIGNAL
        if at_once:
            _flush_stdio()  # (each log record is flushed as it is written)
            os._exit(PARENT_GONE_EXIT)
    if not at_once:
        os.kill(os.getpid(), signal.SIGTERM)
    return at_once  # (only a test's stand-in of `os._exit` returns)


def _handling() -> _Handling:
    """Who takes SIGTERM now."""
    handler = signal.getsignal(signal.SIGTERM)
    if handler in _NO_HANDLER:
        return _Handling.NONE
    return _Handling.LIFELINE if handler is _until_own_stop_handling else _Handling.OWN


def _step(said: _Said | None, handling: _Handling) -> _Step:
    """The watch's step, from the last line (rows) and who takes SIGTERM (columns):

    |             | LIFELINE    | NONE        | OWN    |
    |-------------|-------------|-------------|--------|
    | line unsaid | SAY_AND_END | SAY_AND_END | SIGNAL |
    | line said   | SIGNAL      | END         | SIGNAL |

    The process's own handler always gets the signal: its graceful stop (and, if unsaid,
    its line). The lifeline's handler, the line said, ends the process at once itself."""
    if handling is _Handling.OWN:
        return _Step.SIGNAL
    if said is None:
        return _Step.SAY_AND_END  # (the simulator has no stop handling: it always ends here)
    return _Step.END if handling is _Handling.NONE else _Step.SIGNAL


def say_stopped(say: Callable[[], None]) -> None:
    """Say the process's last line (`process_stopped`) with `say`, unless the watch said it
    already (it ends the process at once: the line said here would follow its own)."""
    global _said_by
    with _last_line:
        if _said_by is _Said.BY_LIFELINE:
            return
        say()
        _said_by = _Said.BY_PROCESS


def parent_gone() -> bool:
    """Whether this process is stopping because the process that started it died."""
    return _parent_gone.is_set()


def exit_status(code: str | int | None) -> str | int | None:
    """The status to exit with, given the command's own `code` (`sys.exit`'s argument):
    `PARENT_GONE_EXIT` in place of a success once the parent has died."""
    return PARENT_GONE_EXIT if code in (0, None) and parent_gone() else code
