"""faust's worker, with a deadline on its stop.

faust's stop after SIGINT/SIGTERM can wait for ever. Seen with the broker gone:
the consumer thread dies inside its own stop (aiokafka's fetcher close is
cancelled), the main loop waits for a thread that will never report back, and
mode ignores every later signal, so only SIGKILL ends the process. Processing is
at least once, so a hard exit is safe: what was not committed is read again on
the next start, as after a SIGKILL (tests/engine: SIGKILL + restart). After
`stop_timeout_s` the worker logs `process_stop_timed_out process=worker` and exits
with status 1, and a supervisor sees a failed stop instead of a hang: the deadline
every long-running process has (chainwatch.stop_deadline), started from mode's
signal handling instead of ours.

A stop that begins without a signal has the same deadline: after a crash
(`consumer.crash(...)`: an agent's error, a drained commit that timed out) mode's
`execute_from_commandline` runs `stop_and_shutdown()`, whose consumer stop
commits and leaves the group: the very waits that hang while the group
coordinator is away. mode calls `on_worker_shutdown()` just before it, for every
stop, so the deadline starts there (cause `crash`, or `ended`) if no signal
started it first.

mode ends every stop with a sentinel task, run just before it closes the loop, that
slept a fixed second: a second of every worker's stop (and of every replay's end in
the suite, which waits for its workers to exit). Ours waits for what that turn is
for - the tasks mode's gather cancelled, for at most the same second - and ends when
they have (one turn more for their callbacks: a transport's `connection_lost`).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import faust

from chainwatch.stop_deadline import StopDeadline

SENTINEL_S = 1.0
"""How long the last turn waits for the tasks mode's gather cancelled (mode's fixed sleep)."""


class BoundedStopWorker(faust.Worker):
    """`faust.Worker` whose stop after the first SIGINT/SIGTERM takes at most `stop_timeout_s`."""

    def __init__(self, *args: Any, stop_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not _is_terminal(self.stdout):
            # faust's start-up spinner writes a "show the cursor" escape at start-up's
            # end and at exit even when nothing was drawn: noise in a log file.
            self.spinner = None
        self.stop_timeout_s = stop_timeout_s
        self._stop_deadline = StopDeadline(
            "worker",
            stop_timeout_s,
            hint="exiting without a clean stop; uncommitted records are read again on restart",
        )

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        # mode's one entry for both signals (it ignores every signal after the first)
        self._stop_deadline.start(sig)
        super()._schedule_shutdown(sig)

    def on_worker_shutdown(self) -> None:
        # mode calls this for every stop, just before `stop_and_shutdown()` (the waits)
        self._stop_deadline.start("ended" if self.crash_reason is None else "crash")
        super().on_worker_shutdown()

    async def _sentinel_task(self) -> None:
        # mode: `await asyncio.sleep(1.0)`, whatever is left (see the module's docstring)
        left = asyncio.all_tasks() - {asyncio.current_task()}
        if left:
            await asyncio.wait(left, timeout=SENTINEL_S)
        await asyncio.sleep(0)  # the done callbacks of the last of them

    def cancel_stop_deadline(self) -> None:
        """Called once the worker returned: what follows (the ops port's stop) is not timed."""
        self._stop_deadline.cancel()


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False
