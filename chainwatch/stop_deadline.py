"""A deadline on a long-running process's stop, shared by all of them.

A stop signal asks a process to finish what it holds and return, and that can
wait for ever: faust's stop with the broker gone (the consumer thread dies
inside it and the main loop waits for it), aiokafka's `consumer.stop()` waiting
for its coordination task and a LeaveGroup request to a frozen broker (the sink
and the notifier stopped only when the broker came back, 75 s after SIGTERM).
Every stop therefore starts a timer (`StopDeadline`): the first SIGINT/SIGTERM,
or a stop that began without one (a worker's crash, a `main` that raised or
ended on its own), whichever comes first; later ones change nothing. Past it
the process logs `process_stop_timed_out` (the process, what started the stop,
the seconds waited, a hint), then `process_stopped outcome="exit 1"` (every
process's last line, docs/observability.md), and exits with
`STOP_TIMED_OUT_EXIT`: a supervisor sees a failed stop instead of a hang. A
stop that ends in time cancels it; cancelling and expiring exclude each other,
so a stop that ends right at the deadline is either one or the other.

A hard exit is safe for every process: processing is at least once, so what was
not committed is read again on the next start, as after a SIGKILL; the gateway
answered nothing it had not committed. The timer is a daemon thread, so it also
fires while the event loop is blocked.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time

from chainwatch.logs import get_logger

log = get_logger(__name__)

STOP_TIMED_OUT_EXIT = 1
"""The exit status of a process whose stop passed its deadline."""

STOP_MARGIN_S = 5.0
"""Added to a graceful stop's own bounds where those make the deadline: the steps
around them (closing consumers, clients, the loop) take time too."""

STOP_TIMED_OUT_HINT = (
    "exiting without a clean stop (is Kafka or the store answering?); "
    "what was not committed is read again on restart"
)


def timer_seconds(timeout_s: float) -> float:
    """`timeout_s` as a `threading.Timer` can wait it: at most `threading.TIMEOUT_MAX`
    (about 292 years), at least 0; `nan` as the longest. A Timer given more (`inf`,
    `1e300`) started, then its thread died on an `OverflowError` with a trace, and the
    stop it guarded had no deadline at all. The settings bound every duration; this
    is the last line of defence should one reach here anyway."""
    if math.isnan(timeout_s):
        return threading.TIMEOUT_MAX
    return min(max(timeout_s, 0.0), threading.TIMEOUT_MAX)


class StopDeadline:
    """Exit the process `timeout_s` after its stop began, unless cancelled first.

    A `timeout_s` no Timer can wait (`inf`, `nan`, past `threading.TIMEOUT_MAX`, below 0)
    is taken as the nearest one it can (`timer_seconds`), with a warning: the deadline
    never dies with a trace."""

    def __init__(self, process: str, timeout_s: float, *, hint: str = STOP_TIMED_OUT_HINT) -> None:
        self.process = process
        self.timeout_s = timer_seconds(timeout_s)
        if self.timeout_s != timeout_s:
            log.warning(
                "stop_deadline_adjusted",
                process=process,
                asked_s=str(timeout_s),  # as text: JSON has no inf or nan
                deadline_s=self.timeout_s,
            )
        self.hint = hint
        self._timer: threading.Timer | None = None
        # cancelling and expiring exclude each other; reentrant: a signal handler
        # (`start`) may run in the main thread inside `cancel`
        self._lock = threading.RLock()
        self._cancelled = False
        self._expiring = False
        self._exited = threading.Event()

    def start(self, reason: signal.Signals | str) -> bool:
        """Start the deadline as the stop begins: `reason` is the signal, or what began
        the stop without one (`"crash"`, `"error"`, `"ended"`). The first call counts;
        later ones, and any after `cancel`, change nothing. True if this one started it."""
        with self._lock:
            if self._timer is not None or self._cancelled:
                return False
            why = reason.name if isinstance(reason, signal.Signals) else reason
            self._timer = threading.Timer(
                self.timeout_s, self._expired, args=(why, time.monotonic())
            )
            self._timer.name = f"stop-deadline:{self.process}"
            self._timer.daemon = True
            self._timer.start()
            return True

    def cancel(self) -> None:
        """The process stopped in time: what follows (its ops port's stop) is not timed.
        Once the deadline is expiring this changes nothing: it waits for the exit, so the
        stop's own last line never follows the deadline's."""
        with self._lock:
            expiring = self._expiring
            if not expiring:
                self._cancelled = True
                if self._timer is not None:
                    self._timer.cancel()
        if expiring:
            self._exited.wait()  # for ever: the timer's thread ends the process

    def _expired(self, reason: str, since: float) -> None:
        with self._lock:
            if self._cancelled:  # the stop ended just as the timer fired
                return
            self._expiring = True
        log.error(
            "process_stop_timed_out",
            process=self.process,
            cause=reason,  # the signal, or what began the stop without one
            waited_s=round(time.monotonic() - since, 1),
            deadline_s=self.timeout_s,
            hint=self.hint,
        )
        # every process's last line; os._exit skips process_lifetime's
        log.info("process_stopped", process=self.process, outcome=f"exit {STOP_TIMED_OUT_EXIT}")
        logging.shutdown()  # flush the handlers: os._exit skips every cleanup
        try:
            os._exit(STOP_TIMED_OUT_EXIT)
        finally:
            self._exited.set()  # only if it returns (a test's)
