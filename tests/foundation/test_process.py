"""The one way long-running processes run (chainwatch/process.py): until SIGINT/SIGTERM,
with their ops port serving meanwhile and released after, and a stop that cannot outlast
its deadline. No broker: plain unit tests (the deadline's in a child process)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from chainwatch.errors import UserError
from chainwatch.ops_server import OpsServer, serve_ops
from chainwatch.process import run_until_signalled, waiting_before_main
from chainwatch.stop_deadline import StopDeadline
from tests.sinks.sink_harness import wait_for

DEADLINE_S = 10.0


def _refused(server: OpsServer) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_stop_and_the_process_returns_what_main_returns(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)

    async def main(stop: asyncio.Event) -> str:
        assert not stop.is_set()
        os.kill(os.getpid(), sig)
        await asyncio.wait_for(stop.wait(), DEADLINE_S)  # a TimeoutError fails the test
        return "stopped"

    assert run_until_signalled("test", main, stop_timeout_s=DEADLINE_S) == "stopped"
    assert signal.getsignal(sig) == before  # the process's own handlers are back


def test_the_ops_server_stops_without_waiting_out_the_standard_librarys_half_second_poll() -> None:
    """Every process stops its ops server: with `serve_forever`'s default poll a stop
    right after a start waited ~0.5 s, in every process and every test that stops one."""
    took = []
    for _ in range(3):
        ops = serve_ops("127.0.0.1", 0)
        started = time.monotonic()
        ops.stop()
        took.append(time.monotonic() - started)
        assert _refused(ops)
    assert min(took) < 0.3, took


def test_the_ops_port_answers_while_main_runs_and_is_released_after() -> None:
    ops = serve_ops("127.0.0.1", 0)  # any free port

    async def main(stop: asyncio.Event) -> tuple[int, bytes]:
        def scrape() -> tuple[int, bytes]:
            with urllib.request.urlopen(ops.metrics_url, timeout=DEADLINE_S) as answer:
                return answer.status, answer.read()

        return await asyncio.to_thread(scrape)

    status, body = run_until_signalled("test", main, ops=ops, stop_timeout_s=DEADLINE_S)
    assert status == 200
    assert b"python_info" in body  # the default registry's collectors
    assert _refused(ops)


def test_a_failing_main_still_releases_the_port_and_the_signal_handlers() -> None:
    ops = serve_ops("127.0.0.1", 0)
    before = signal.getsignal(signal.SIGTERM)

    async def main(stop: asyncio.Event) -> None:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        run_until_signalled("test", main, ops=ops, stop_timeout_s=DEADLINE_S)
    assert _refused(ops)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_connection_that_sends_nothing_is_closed_and_scrapes_go_on() -> None:
    """The request's deadline (sinks.http_serving.REQUEST_DEADLINE_S, 0.5 s here) closes a
    connection that stopped sending, well before the per-read timeout (10 s)."""
    ops = serve_ops("127.0.0.1", 0, request_deadline_s=0.5)
    try:
        with socket.create_connection(("127.0.0.1", ops.port), timeout=DEADLINE_S) as silent:
            silent.sendall(b"GET /metr")
            assert silent.recv(1) == b""  # closed unanswered; a TimeoutError fails the test
        with urllib.request.urlopen(ops.metrics_url, timeout=DEADLINE_S) as answer:
            assert answer.status == 200
    finally:
        ops.stop()


STUCK = """
import asyncio, sys, threading
from pathlib import Path
from chainwatch.logs import configure_logging
from chainwatch.process import run_until_signalled

ready, closing = Path(sys.argv[1]), Path(sys.argv[2])
how, timeout_s = sys.argv[3], float(sys.argv[4])
configure_logging("info", "json")

async def held_by_the_close() -> None:  # the loop's close waits for a thread that never ends
    try:
        await asyncio.to_thread(threading.Event().wait)
    except asyncio.CancelledError:  # only the loop's close cancels it: main has returned
        closing.write_text("closing")
        raise

async def main(stop: asyncio.Event) -> None:
    ready.write_text("ready")
    if how in ("ends", "raises"):  # main ends on its own (a drain that ended, an error)
        asyncio.ensure_future(held_by_the_close())
        await asyncio.sleep(0)
        if how == "raises":
            raise RuntimeError("broken")
        return
    await stop.wait()
    if how == "main":  # its stop never ends (aiokafka's consumer.stop() on a frozen broker)
        await asyncio.Event().wait()
    if how == "thread":  # main returns, the loop's close waits for a thread that never ends
        asyncio.ensure_future(held_by_the_close())
        await asyncio.sleep(0)

run_until_signalled("sink", main, stop_timeout_s=timeout_s)
"""

READY_S = 60.0
"""How long a child may take to start: a loaded machine takes seconds to import."""


def _events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _run_stuck(
    tmp_path: Path,
    how: str,
    *,
    timeout_s: float,
    at_ready: tuple[signal.Signals, ...] = (),
    in_close: tuple[signal.Signals, ...] = (),
) -> tuple[int, float, str]:
    """Run STUCK; send `at_ready` once it runs `main`, then `in_close` once the loop's close
    waits (one at a time: each after the previous one was seen, or the process ended).
    The exit status, the seconds from the first signal (or from the close) to the exit,
    and the log."""
    ready, closing = tmp_path / "ready", tmp_path / "closing"
    log = tmp_path / "process.log"
    args = [sys.executable, "-c", STUCK, str(ready), str(closing), how, str(timeout_s)]
    with (
        log.open("wb") as out,
        subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT) as process,
    ):
        try:
            wait_for(ready.exists, timeout_s=READY_S, what="the process to start")
            since = time.monotonic()
            for sig in at_ready:
                process.send_signal(sig)
            if in_close:
                wait_for(
                    lambda: closing.exists() or process.poll() is not None,
                    timeout_s=READY_S,
                    what="the loop's close",
                )
                since = since if at_ready else time.monotonic()
            for sig in in_close:
                process.send_signal(sig)
                # the first signal is logged: a second one sent before it is seen could merge
                wait_for(
                    lambda: '"process_signalled"' in log.read_text() or process.poll() is not None,
                    timeout_s=READY_S,
                    what="the signal to be seen",
                )
            status = process.wait(timeout=timeout_s + 30)
            took = time.monotonic() - since
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return status, took, log.read_text()


@pytest.mark.parametrize("how", ["main", "thread", "clean"])
def test_a_stop_that_does_not_end_exits_1_after_its_deadline(tmp_path: Path, how: str) -> None:
    status, took, text = _run_stuck(tmp_path, how, timeout_s=1.0, at_ready=(signal.SIGTERM,))
    lines = _events(tmp_path / "process.log")
    events = [line["event"] for line in lines]
    timed_out = [line for line in lines if line["event"] == "process_stop_timed_out"]
    assert events[-1] == "process_stopped", text  # every process's last line, as ever
    if how == "clean":
        assert status == 0, text
        assert timed_out == []
        assert lines[-1]["outcome"] == "ok"
        return
    assert status == 1, text
    assert took >= 1.0
    assert [(t["process"], t["cause"]) for t in timed_out] == [("sink", "SIGTERM")]
    assert timed_out[0]["waited_s"] >= 1.0  # type: ignore[operator]
    assert timed_out[0]["hint"]
    assert lines[-1]["outcome"] == "exit 1"


STOP_S = 2.0
"""The deadline of the cases that signal during the loop's close: room for the signals.
They are all sent within 0.1 s of the deadline's start (0.05-0.07 s measured with two CPU
hogs beside the suite: the test's 50 ms poll and the child's signal line), so 2 s leaves
them twenty times that; each case waits the deadline out (5 s made these six 33 s)."""


@pytest.mark.parametrize(
    ("how", "at_ready", "in_close", "cause"),
    [
        # a second signal while the loop's close waits (main returned on the first)
        ("thread", (signal.SIGTERM,), (signal.SIGTERM,), "SIGTERM"),
        ("thread", (signal.SIGINT,), (signal.SIGINT,), "SIGINT"),
        # the first signals after main returned on its own, or raised
        ("ends", (), (signal.SIGTERM, signal.SIGTERM), "ended"),
        ("ends", (), (signal.SIGINT, signal.SIGINT), "ended"),
        ("raises", (), (signal.SIGINT, signal.SIGTERM), "error"),
        # no signal at all: a main that raised still gets its close timed
        ("raises", (), (), "error"),
    ],
)
def test_signals_during_the_loops_close_change_nothing_and_its_deadline_holds(
    tmp_path: Path,
    how: str,
    at_ready: tuple[signal.Signals, ...],
    in_close: tuple[signal.Signals, ...],
    cause: str,
) -> None:
    status, _took, text = _run_stuck(
        tmp_path, how, timeout_s=STOP_S, at_ready=at_ready, in_close=in_close
    )
    lines = _events(tmp_path / "process.log")
    assert status == 1, text  # not killed by a signal (-15), nor alive past the deadline
    assert "KeyboardInterrupt" not in text
    timed_out = [line for line in lines if line["event"] == "process_stop_timed_out"]
    assert [(t["process"], t["cause"]) for t in timed_out] == [("sink", cause)], text
    assert timed_out[0]["waited_s"] >= STOP_S  # type: ignore[operator]
    signalled = [line for line in lines if line["event"] == "process_signalled"]
    first = (*at_ready, *in_close)[:1]
    assert [line["signal"] for line in signalled] == [sig.name for sig in first]  # once
    stopped = [line for line in lines if line["event"] == "process_stopped"]
    assert lines[-1]["event"] == "process_stopped", text  # every process's last line
    assert [line["outcome"] for line in stopped] == ["exit 1"], text


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The statuses `StopDeadline` would exit with (`os._exit` and the log shutdown faked)."""
    from chainwatch import stop_deadline

    statuses: list[int] = []
    monkeypatch.setattr(stop_deadline.os, "_exit", statuses.append)
    monkeypatch.setattr(stop_deadline.logging, "shutdown", lambda: None)
    return statuses


def test_a_deadline_cancelled_as_its_timer_fires_does_nothing(exits: list[int]) -> None:
    deadline = StopDeadline("test", 60.0)
    assert deadline.start("ended")
    deadline.cancel()
    deadline._expired("ended", time.monotonic())  # the timer's thread, already past its wait
    assert exits == []  # no process_stop_timed_out, no second process_stopped, no exit 1
    assert not deadline.start(signal.SIGTERM)  # and nothing starts it again


def test_once_the_deadline_expires_a_cancel_waits_for_the_exit(exits: list[int]) -> None:
    from chainwatch import stop_deadline

    expiring, release = threading.Event(), threading.Event()

    def exit_slowly(status: int) -> None:  # os._exit, with the process still there a while
        exits.append(status)
        expiring.set()
        release.wait(DEADLINE_S)

    stop_deadline.os._exit = exit_slowly  # type: ignore[assignment]  # the fixture restores it
    deadline = StopDeadline("test", 0.01)
    deadline.start(signal.SIGTERM)
    assert expiring.wait(DEADLINE_S)
    cancelling = threading.Thread(target=deadline.cancel, daemon=True)
    cancelling.start()
    cancelling.join(0.5)
    # the stop's own end (process_stopped outcome=ok) never follows the deadline's lines
    assert cancelling.is_alive()
    release.set()
    cancelling.join(DEADLINE_S)
    assert not cancelling.is_alive()
    assert exits == [1]


@pytest.mark.parametrize("timeout_s", [math.inf, math.nan, 1e300, threading.TIMEOUT_MAX * 2])
def test_a_deadline_no_timer_can_wait_still_holds_and_never_dies_with_a_trace(
    exits: list[int], monkeypatch: pytest.MonkeyPatch, timeout_s: float
) -> None:
    """A Timer given `inf` or `1e300` started, then its thread died on an OverflowError
    (a trace in the log) and the stop it guarded had no deadline at all."""
    died: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    deadline = StopDeadline("test", timeout_s)
    assert deadline.timeout_s == threading.TIMEOUT_MAX  # the longest it can wait
    assert deadline.start(signal.SIGTERM)
    timer = deadline._timer
    assert timer is not None
    timer.join(0.3)  # the broken one died at its first wait, at once
    assert timer.is_alive()
    assert died == []
    deadline.cancel()
    timer.join(DEADLINE_S)
    assert not timer.is_alive()
    assert died == []
    assert exits == []


def test_a_negative_deadline_expires_at_once(exits: list[int]) -> None:
    deadline = StopDeadline("test", -1.0)
    assert deadline.start("ended")
    wait_for(lambda: exits == [1], DEADLINE_S, "the deadline's exit")


def test_the_notifiers_deadline_leaves_its_posts_under_way_their_time(tmp_path: Path) -> None:
    from chainwatch.notify_runner import stop_timeout_s
    from chainwatch.settings import Settings
    from chainwatch.stop_deadline import STOP_MARGIN_S
    from sinks.consumer import COMMIT_TIMEOUT_S, STOP_S
    from sinks.webhooks.dispatcher import STOP_GRACE_S
    from sinks.webhooks.warmup import CANCEL_WAIT_S

    default = Settings(data_dir=tmp_path)
    graceful = STOP_GRACE_S + CANCEL_WAIT_S + COMMIT_TIMEOUT_S + STOP_S + STOP_MARGIN_S
    assert stop_timeout_s(default) == 10 + graceful  # 54 s > `engine.stop_timeout_s`, 30 s
    assert stop_timeout_s(default) > default.engine.stop_timeout_s
    patient = Settings(data_dir=tmp_path, engine={"stop_timeout_s": 90})
    assert stop_timeout_s(patient) == 90
    slow = Settings(data_dir=tmp_path, webhooks={"timeout_s": 60})
    assert stop_timeout_s(slow) == 60 + graceful


def test_the_gateways_deadline_leaves_its_requests_their_grace(tmp_path: Path) -> None:
    from chainwatch.commands.gateway import PUBLISHER_STOP_S, stop_timeout_s
    from chainwatch.settings import Settings
    from chainwatch.stop_deadline import STOP_MARGIN_S

    default = Settings(data_dir=tmp_path)
    assert stop_timeout_s(default) == 15 + PUBLISHER_STOP_S + STOP_MARGIN_S  # over 30 s
    patient = Settings(data_dir=tmp_path, gateway={"shutdown_grace_s": 40.5})
    assert stop_timeout_s(patient) == 41 + PUBLISHER_STOP_S + STOP_MARGIN_S


def test_a_signal_before_the_loop_runs_main_has_main_start_told_to_stop() -> None:
    """Between our handlers' install and the loop's, a signal only started the deadline:
    `main` then ran as if never told, until the deadline ended the process (exit 1)."""

    def loop_with_a_signal_on_the_way() -> asyncio.AbstractEventLoop:
        signal.raise_signal(signal.SIGTERM)  # a supervisor's stop as the process starts
        return asyncio.new_event_loop()

    async def main(stop: asyncio.Event) -> bool:
        return stop.is_set()

    told = run_until_signalled(
        "early", main, loop_factory=loop_with_a_signal_on_the_way, stop_timeout_s=30
    )
    assert told


def test_a_start_that_fails_while_waiting_still_logs_the_process_stopped_line() -> None:
    """A worker or sink whose start fails (a topic with another partition count, Kafka
    refusing it) logged `process_starting` and never `process_stopped`, which the docs
    call every process's last line."""
    with (
        capture_logs() as logs,
        pytest.raises(UserError),
        waiting_before_main("sink", None),
    ):
        raise UserError("topic scans has 3 partitions")
    events = [(line["event"], line.get("outcome")) for line in logs]
    assert events[0] == ("process_starting", None)
    assert events[-1] == ("process_stopped", "error")


LOGGING_HELD = """
import logging, signal, threading
from chainwatch.logs import configure_logging
from chainwatch.process import run_until_signalled

configure_logging("info", "json")
handler = logging.getLogger().handlers[0]
emit = handler.emit
writing = threading.Lock()  # a handler's own lock, not reentrant as many are: no timing

def emit_then_a_signal(record: logging.LogRecord) -> None:
    with writing:
        emit(record)
        if isinstance(record.msg, dict) and record.msg.get("event") == "process_starting":
            signal.raise_signal(signal.SIGTERM)  # a supervisor's stop lands in the handler

handler.emit = emit_then_a_signal

async def main(stop):
    return stop.is_set()

print("told to stop:", run_until_signalled("sink", main, stop_timeout_s=30), flush=True)
"""


def test_a_signal_landing_inside_a_logging_handler_is_logged_after_it() -> None:
    """Outside `main` the stop signals go to a plain Python handler, which runs in the
    main thread wherever it is, also inside a logging handler: one that logged there
    waited for that handler's lock, held by the very code it interrupted, for ever, and
    so did the stop deadline's line (the child hung past its 30 s deadline)."""
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_HELD],
        capture_output=True,
        text=True,
        timeout=READY_S,
        check=False,
    )
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert done.stdout == "told to stop: True\n", done.stderr
    assert [e["signal"] for e in events if e["event"] == "process_signalled"] == ["SIGTERM"]
    assert events[-1]["event"] == "process_stopped", done.stderr


class SignalledWhileStopping:
    """An ops server whose stop (its `serve_forever` poll) is where a
    supervisor's SIGTERM lands, after a `main` that ended on its own (a drain)."""

    metrics_url = None

    def stop(self) -> None:
        signal.raise_signal(signal.SIGTERM)


def test_a_signal_during_the_ops_servers_stop_is_logged_before_the_process_stopped_line() -> None:
    """The signal log was closed before the ops server's stop: a signal there was taken by
    the plain handler, queued for a thread that had ended, and never logged."""

    async def main(stop: asyncio.Event) -> str:
        return "drained"

    ops = SignalledWhileStopping()
    with capture_logs() as logs:
        done = run_until_signalled("test", main, ops=ops, stop_timeout_s=DEADLINE_S)  # type: ignore[arg-type]
    assert done == "drained"
    lines = [(line["event"], line.get("signal")) for line in logs]
    assert lines[-2:] == [("process_signalled", "SIGTERM"), ("process_stopped", None)]


def test_a_call_off_the_main_thread_is_refused_and_leaves_no_thread_behind() -> None:
    """The signal log's thread starts before the handlers are installed, which only the
    main thread may do: a refused call left it waiting on its queue for ever."""
    refused: list[BaseException] = []

    async def main(stop: asyncio.Event) -> None:
        raise AssertionError("never run")

    def off_the_main_thread() -> None:
        try:
            run_until_signalled("test", main, stop_timeout_s=DEADLINE_S)
        except ValueError as exc:
            refused.append(exc)

    caller = threading.Thread(target=off_the_main_thread)
    caller.start()
    caller.join()
    assert len(refused) == 1
    assert [t.name for t in threading.enumerate() if t.name == "signal-log"] == []
