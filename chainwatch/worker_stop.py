"""faust's worker, with a deadline on its stop.

faust's stop after SIGINT/SIGTERM can wait for ever. Seen with the broker gone:
the consumer thread dies inside its own stop (aiokafka's fetcher close is
cancelled), the main loop waits for a thread that will never report back, and
mode ignores every later signal, so only SIGKILL ends the process. Processing is
at least once, so a hard exit is safe: what was not committed is read again on
the next start, as after a SIGKILL (tests/engine: SIGKILL + restart). After
`stop_timeout_s` the worker logs `worker_stop_timed_out` and exits with status 1,
and a supervisor sees a failed stop instead of a hang.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import faust

from chainwatch.logs import get_logger

log = get_logger(__name__)

STOP_TIMED_OUT_EXIT = 1
"""The exit status of a worker whose stop passed its deadline."""


class BoundedStopWorker(faust.Worker):
    """`faust.Worker` whose stop after the first SIGINT/SIGTERM takes at most `stop_timeout_s`."""

    def __init__(self, *args: Any, stop_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not _is_terminal(self.stdout):
            # faust's start-up spinner writes a "show the cursor" escape at start-up's
            # end and at exit even when nothing was drawn: noise in a log file.
            self.spinner = None
        self.stop_timeout_s = stop_timeout_s
        self._stop_deadline: threading.Timer | None = None

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        # mode's one entry for both signals (it ignores every signal after the first)
        if self._stop_deadline is None:
            self._stop_deadline = threading.Timer(
                self.stop_timeout_s, self._stop_timed_out, args=(sig, time.monotonic())
            )
            self._stop_deadline.daemon = True
            self._stop_deadline.start()
        super()._schedule_shutdown(sig)

    def _stop_timed_out(self, sig: signal.Signals, since: float) -> None:
        log.error(
            "worker_stop_timed_out",
            signal=sig.name,
            waited_s=round(time.monotonic() - since, 1),
            hint="exiting without a clean stop; uncommitted records are read again on restart",
        )
        # every process's last line (docs/observability.md); os._exit skips process_lifetime's
        log.info("process_stopped", process="worker", outcome=f"exit {STOP_TIMED_OUT_EXIT}")
        logging.shutdown()  # flush the handlers: os._exit skips every cleanup
        os._exit(STOP_TIMED_OUT_EXIT)

    def cancel_stop_deadline(self) -> None:
        """Called once the worker returned: what follows (the ops port's stop) is not timed."""
        if self._stop_deadline is not None:
            self._stop_deadline.cancel()


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False
