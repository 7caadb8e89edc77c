"""How every long-running process runs: until SIGINT/SIGTERM, with its ops port, logged.

The sink, the notifier and the gateway run an `async def main(stop)` through
`run_until_signalled`: a fresh event loop (the gateway's is uvloop, as uvicorn
picks), SIGINT and SIGTERM set `stop` (logged as `process_signalled`), and
`main` is expected to finish what it holds and return; a second signal changes
nothing. The first signal also starts the stop's deadline (`stop_timeout_s`,
chainwatch.stop_deadline), and so does `main` raising or returning on its own: a
`main` that has not returned by then (aiokafka's `consumer.stop()` waiting on a
frozen broker), or an event loop whose close has not ended (a thread that does
not end), ends with `process_stop_timed_out` and exit status 1. From `main`'s
return until the loop has closed, SIGINT/SIGTERM change nothing either (the
deadline runs on): the process's own handlers are back only once it has
closed. The worker runs faust's own `Worker`, which owns its loop and the same
two signals, inside `process_lifetime`, the part they all share:

- `process_starting` is logged with the process name, the pid and the URL of
  its `/metrics` (or none), `process_stopped` when it returns or raises;
- the process's ops server (`chainwatch.ops_server`, bound and serving before
  the call: a taken port is a one-line error before anything starts) is stopped
  on the way out, releasing its port. The sink's and the notifier's is
  `serve_metrics` (`metrics_port`), the worker's `chainwatch.runners.serve_worker_ops`
  (`engine.metrics_port`, or the next free one); the gateway serves its own from
  its web app. The worker, the sink and the notifier start theirs before they
  wait for Kafka (`Startup`): meanwhile `/healthz` says alive and what they
  wait for, `/readyz` 503 with the reason. The gateway serves at once the same
  way while it prepares its topics (`chainwatch.gateway_topics`).
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from chainwatch.kafka_watch import KafkaWatch
from chainwatch.lifeline import PARENT_GONE_EXIT, parent_gone, say_stopped
from chainwatch.logs import get_logger
from chainwatch.ops_server import OpsServer, serve_ops
from chainwatch.settings import KafkaSettings, Settings
from chainwatch.stop_deadline import StopDeadline

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""What stops a long-running process (a supervisor's SIGTERM, Ctrl-C)."""

Main = Callable[[asyncio.Event], Coroutine[Any, Any, T]]
"""The body of a process: runs until the event is set (or its work is done)."""

log = get_logger(__name__)


class Startup:
    """What a long-running process still waits for before it does its work (Kafka, its
    store), as its probes tell it: `/healthz` alive and saying what it waits for, `/readyz`
    503 with the reason until it waits for nothing. The process sets `waiting_for`."""

    def __init__(self, waiting_for: str | None = None) -> None:
        self.waiting_for = waiting_for
        self.kafka: KafkaWatch | None = None
        """Set once the process has started: Kafka going away makes it not ready."""
        self.checks: list[Callable[[], str | None]] = []
        """More reasons to be not ready (`also_ready`)."""

    def also_ready(self, problem: Callable[[], str | None]) -> None:
        """`problem()` (a reason, or None) also makes the process not ready: the notifier's
        silences it cannot read."""
        self.checks.append(problem)

    @contextmanager
    def watching_kafka(self, kafka: KafkaSettings, ops: OpsServer | None) -> Iterator[None]:
        """Meanwhile, Kafka going away makes the process not ready (only a process with
        probes to answer needs to ask); each probe within `kafka.probe_timeout_s`."""
        self.kafka = (
            KafkaWatch(
                kafka.bootstrap,
                timeout_s=kafka.probe_timeout_s,
                ssl_context=kafka.security.ssl_context,
            ).start()
            if ops is not None
            else None
        )
        try:
            yield
        finally:
            if self.kafka is not None:
                self.kafka.stop()

    def kafka_problem(self) -> str | None:
        """Why Kafka makes the process not ready, if it does."""
        return None if self.kafka is None else self.kafka.problem()

    def health(self) -> tuple[bool, dict[str, Any]]:
        waiting = self.waiting_for
        return True, {} if waiting is None else {"waiting_for": waiting}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        waiting = self.waiting_for
        if waiting is not None:
            return False, {"reasons": [f"waiting for {waiting}"]}
        problems = [p for p in (self.kafka_problem(), *(c() for c in self.checks)) if p]
        return not problems, {"reasons": problems}


def serve_metrics(settings: Settings, startup: Startup | None = None) -> OpsServer | None:
    """Prometheus `/metrics` and `/healthz` on `metrics_host:metrics_port` (loopback by
    default) for the sink and the notifier, and `/readyz` from `startup`; None if off."""
    if not settings.metrics_port:
        return None
    if startup is None:
        return serve_ops(settings.metrics_host, settings.metrics_port)
    return serve_ops(
        settings.metrics_host, settings.metrics_port, health=startup.health, ready=startup.ready
    )


class _StopSignalled(BaseException):
    """A stop signal that came while the process waited before its main part."""


@dataclass(slots=True)
class Waited:
    stopped: bool = False
    """A stop signal ended the wait: the process has nothing left to do."""


@contextmanager
def waiting_before_main(process: str, ops: OpsServer | None) -> Iterator[Waited]:
    """The wait before a long-running process's main part (for Kafka, `Startup`).

    A stop signal meanwhile ends the process as one during its main part does
    (`process_signalled`, `process_stopped outcome=ok`, exit 0): the default
    handlers killed it by the signal (status 143, no line) while it waited. `ops`
    (serving during the wait) is stopped when the wait ends so or fails; the main
    part stops it otherwise. `process_starting` is logged here, before the wait
    (the main part's `process_lifetime` then does not log it again): a process
    waiting for Kafka had said nothing of its start.
    """
    waited = Waited()
    started = time.monotonic()
    _log_starting(process, ops)

    def on_signal(signum: int, _frame: object) -> None:
        raise _StopSignalled(signum)

    def stopped(outcome: str) -> None:
        if ops is not None:
            ops.stop()
        say_stopped(
            lambda: log.info(
                "process_stopped",
                process=process,
                outcome=_as_exited(outcome),
                ran_s=round(time.monotonic() - started, 1),
                waited_for="its start",
            )
        )

    before = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield waited
    except _StopSignalled as stop:
        waited.stopped = True
        log.info("process_signalled", process=process, signal=signal.Signals(stop.args[0]).name)
        stopped("ok")
    except BaseException as exc:
        # every process's last line, also when its start fails (a topic with another
        # partition count, Kafka refusing it): the log showed process_starting alone
        stopped(_outcome(exc.code) if isinstance(exc, SystemExit) else "error")
        raise
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _outcome(code: object) -> str:
    """`process_stopped`'s outcome of a `SystemExit` (faust's worker leaves through one)."""
    return "ok" if not code else f"exit {code}"


def _as_exited(outcome: str) -> str:
    """`outcome` as the status the process exits with: a clean stop of a child whose
    parent died exits `PARENT_GONE_EXIT` (chainwatch.lifeline), not 0."""
    return f"exit {PARENT_GONE_EXIT}" if outcome == "ok" and parent_gone() else outcome


def _log_starting(process: str, ops: OpsServer | None, metrics_url: str | None = None) -> None:
    metrics = metrics_url if ops is None else ops.metrics_url
    log.info("process_starting", process=process, pid=os.getpid(), metrics=metrics)


@contextmanager
def process_lifetime(
    process: str,
    ops: OpsServer | None = None,
    *,
    announced: bool = False,
    metrics_url: str | None = None,
    before_stopped: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Log the start (unless `announced` by `waiting_before_main`) and the end of
    `process`; stop its ops server (if any) on the way out. `metrics_url`: where a
    process without an ops server serves its metrics (the gateway, on its own port).
    `before_stopped` runs after the ops server's stop, right before `process_stopped`
    (the signal log's close: a signal during that stop is logged before the last line)."""
    if not announced:
        _log_starting(process, ops, metrics_url)
    started = time.monotonic()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except SystemExit as exc:  # faust's worker leaves through SystemExit(0)
        outcome = _outcome(exc.code)
        raise
    finally:
        if ops is not None:
            ops.stop()
        if before_stopped is not None:
            before_stopped()
        say_stopped(  # unless a lifeline said it, ending the process at once
            lambda: log.info(
                "process_stopped",
                process=process,
                outcome=_as_exited(outcome),
                ran_s=round(time.monotonic() - started, 1),
            )
        )


def run_until_signalled(
    process: str,
    main: Main[T],
    *,
    ops: OpsServer | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    announced: bool = False,
    metrics_url: str | None = None,
    stop_timeout_s: float,
) -> T:
    """Run `main(stop)` in a new event loop until it returns; SIGINT/SIGTERM set `stop`.

    Call from the main thread (signal handlers can only be installed there).
    `ops` serves while `main` runs and is stopped after; what `main` returns is returned.
    From the first signal, or from `main`'s return or raise if no signal came first,
    `main`'s return and the loop's close (its tasks cancelled, its threads joined) get
    `stop_timeout_s`; past it the process exits with `STOP_TIMED_OUT_EXIT`
    (chainwatch.stop_deadline). Outside `main` (before the loop runs it, and from its
    return until the loop has closed) a signal only starts that deadline; the
    process's own handlers are restored at the very end.
    """
    deadline = StopDeadline(process, stop_timeout_s)
    signalled: list[signal.Signals] = []

    def log_signalled(sig: signal.Signals) -> None:
        log.info(
            "process_signalled", process=process, signal=sig.name, stop_deadline_s=stop_timeout_s
        )

    def first(sig: signal.Signals) -> bool:
        deadline.start(sig)  # first: nothing may keep the deadline from starting
        if signalled:
            return False
        signalled.append(sig)
        return True

    def on_stop_signal(sig: signal.Signals) -> None:  # in the loop: it may log
        if first(sig):
            log_signalled(sig)

    signal_log = _SignalLog(log_signalled)

    def on_signal(signum: int, _frame: object) -> None:
        # a plain handler: no loop to run a callback, nothing raised into the close, and
        # no logging (`_SignalLog`)
        sig = signal.Signals(signum)
        if first(sig):
            signal_log.note(sig)

    try:
        before = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    except BaseException:
        signal_log.close()  # refused (not the main thread): no thread of it left behind
        raise
    try:
        with process_lifetime(
            process,
            ops,
            announced=announced,
            metrics_url=metrics_url,
            # its line before `process_stopped`, also for a signal during the ops server's
            # stop (up to `sinks.http_serving.STOP_POLL_S`: its `serve_forever` poll)
            before_stopped=signal_log.close,
        ):
            runner = asyncio.Runner(loop_factory=loop_factory)
            try:
                result = runner.run(_until_signalled(main, on_stop_signal, on_signal, signalled))
            except BaseException:
                deadline.start("error")  # its graceful stop was under way (the notifier's)
                runner.close()  # timed; if this hangs or raises, the deadline stands
                deadline.cancel()
                raise
            deadline.start("ended")  # returned without a signal (a drain that ended)
            runner.close()
            deadline.cancel()  # only after a clean close
            return result
    finally:
        signal_log.close()
        for sig, handler in before.items():
            signal.signal(sig, handler)


class _SignalLog:
    """Logs, in a thread of its own, the signals that the plain handler (outside `main`)
    took: a Python signal handler runs in the main thread between two bytecodes, also
    inside a logging handler, whose lock is then held by the code it interrupted. One
    that logged there waited for that lock for ever (a handler's own plain lock; logging's
    is reentrant, and the write under way could be re-entered instead), and the stop
    deadline's own line waited behind it.
    The handler only puts the signal on a `queue.SimpleQueue`, whose `put` may be called
    from a signal handler. `close` logs what is left, then ends the thread."""

    def __init__(self, log_signalled: Callable[[signal.Signals], None]) -> None:
        self._log = log_signalled
        self._queue: queue.SimpleQueue[signal.Signals | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="signal-log", daemon=True)
        self._thread.start()

    def note(self, sig: signal.Signals) -> None:
        self._queue.put(sig)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (sig := self._queue.get()) is not None:
            self._log(sig)


async def _until_signalled(
    main: Main[T],
    on_stop_signal: Callable[[signal.Signals], None],
    outside_main: Callable[[int, object], None],
    signalled: list[signal.Signals],
) -> T:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        on_stop_signal(sig)
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    if signalled:  # a signal before the loop ran: `main` starts told to stop
        stop.set()
    try:
        return await main(stop)
    finally:
        for sig in STOP_SIGNALS:  # asyncio would leave the defaults: the close gets ours
            loop.remove_signal_handler(sig)
            signal.signal(sig, outside_main)


@contextmanager
def stop_signals_as_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the command as Ctrl-C does: each is sent on as SIGINT, so
    that `asyncio.run`, when one runs, cancels its task as for a Ctrl-C (a
    `KeyboardInterrupt` raised in the handler instead broke into the loop wherever it was,
    and left aiokafka's tasks pending). A replay's or a backtest's run (topics, consumer
    group, worker state) was left behind by a SIGTERM (a CI job's timeout, `timeout`),
    where Ctrl-C deleted it. Started with SIGINT ignored, the command keeps ignoring a
    real SIGINT, and a SIGTERM or SIGHUP does Ctrl-C's work itself."""

    def as_ctrl_c(signum: int, frame: FrameType | None) -> None:
        for sig in previous:  # once: a second one must not cut the run's clean-up
            signal.signal(sig, signal.SIG_IGN)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            os.kill(os.getpid(), signal.SIGINT)
            return
        # started with SIGINT ignored (a script's background job): a SIGINT sent on is
        # ignored too, and no `asyncio.run` took Ctrl-C over (it does only from Python's
        # own handler), so its Ctrl-C is done here
        _interrupt_as_ctrl_c(frame)

    # a signal the command was started with ignored stays ignored (`nohup`: SIGHUP)
    previous = {
        sig: handler
        for sig in (signal.SIGTERM, signal.SIGHUP)
        if (handler := signal.getsignal(sig)) is not signal.SIG_IGN
    }
    for sig in previous:
        signal.signal(sig, as_ctrl_c)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_RUNNER_RUN = asyncio.Runner.run.__code__
"""The frame of `asyncio.run` (through `asyncio.Runner.run`, whose local `task` is the
main task) that a stop signal interrupted, if any."""


def _interrupt_as_ctrl_c(frame: FrameType | None) -> None:
    """Ctrl-C's effect, from a signal handler where SIGINT is ignored: inside
    `asyncio.run`, its main task is cancelled and the run ends in `KeyboardInterrupt`
    (asyncio's own Ctrl-C handler, given that task); outside, `KeyboardInterrupt` is raised
    where the main thread is. Raised inside a running task instead, the exception went to
    that task alone: its clean-up ran with aiokafka's tasks cancelled beside it, and
    asyncio printed "Task exception was never retrieved" under the command's last line."""
    while frame is not None and frame.f_code is not _RUNNER_RUN:
        frame = frame.f_back
    runner = frame.f_locals.get("self") if frame is not None else None
    task = frame.f_locals.get("task") if frame is not None else None
    on_sigint = getattr(runner, "_on_sigint", None)
    if frame is None or not isinstance(task, asyncio.Task) or on_sigint is None:
        raise KeyboardInterrupt
    on_sigint(signal.SIGINT, frame, main_task=task)
