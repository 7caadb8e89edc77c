"""Ctrl-C on a replay (or a backtest, which runs replays): the run is cleaned up as after
any failure, and the command says so in one line with exit status 130. It ended with 130
and no word at all, so an operator could not tell whether its topics were left behind
(an import's Ctrl-C always said what became of its rows)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from child_env import environ_without_settings

from chainwatch.kafka_admin import admin_client
from chainwatch.process import stop_signals_as_ctrl_c
from tests.sinks.sink_harness import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["SIGINT", "SIGTERM", "SIGTERM-background-job"],
)
def test_ctrl_c_on_a_replay_says_in_one_line_that_its_run_was_deleted(
    tmp_path: Path, kafka_bootstrap: str, stop: signal.Signals, sigint_ignored: bool
) -> None:
    """SIGTERM (a CI job's timeout, `timeout`) left the run's topics, group and worker state
    behind, exit status 143: it now stops the replay as Ctrl-C does - also when started
    with SIGINT ignored, as a script's background job is (the SIGINT it was sent on as was
    ignored, and the replay ran to its end). The child's SIGINT is set either way: this
    suite itself may run with it ignored (`make test &`)."""
    sigint = signal.SIG_IGN if sigint_ignored else signal.SIG_DFL
    scenario, env = _examples_replay(tmp_path, kafka_bootstrap)
    err = tmp_path / "replay.err"
    with (
        err.open("wb") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "chainwatch", "replay", str(scenario)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=ROOT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
        ) as replay,
    ):
        try:
            # its workers are in the group and the records go out: a run to clean up
            wait_for(
                lambda: "replay: publishing:" in err.read_text() or replay.poll() is not None,
                timeout_s=180,
                what="the replay's publishing",
            )
            assert replay.poll() is None, err.read_text()
            replay.send_signal(stop)
            status = replay.wait(timeout=120)
        finally:
            if replay.poll() is None:
                replay.kill()
                replay.wait()
    said = err.read_text().strip().splitlines()
    assert status == 130, said
    last = re.fullmatch(
        r"error: interrupted; replay run (\w+) stopped, its topics, consumer group and "
        r"worker state were deleted",
        said[-1],
    )
    assert last is not None, said
    admin = admin_client(kafka_bootstrap, request_timeout_s=15)
    try:
        left = [t for t in admin.list_topics() if t.startswith(f"replay-{last[1]}")]
    finally:
        admin.close()
    assert left == []
    assert not list((tmp_path / "data").glob(f"worker*/faust/replay-{last[1]}"))


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a replay's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _sigterm_pending(pid: int) -> bool:
    """Whether a stopped (SIGSTOP) process has been sent SIGTERM; a process gone: True."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    bit = 1 << (signal.SIGTERM - 1)
    return any(
        int(line.split()[1], 16) & bit
        for line in status.splitlines()
        if line.startswith(("SigPnd:", "ShdPnd:"))
    )


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_while_a_replay_waits_for_its_engine_cleans_up_at_once(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """The workers stopped (SIGSTOP: an engine that does not drain its event-time window),
    then Ctrl-C. The window's wait ran in `asyncio.to_thread`, whose thread `asyncio.run`
    joins: the replay cleaned up only once the wait ended (here at its stall restart,
    after the workers' 120 s start grace and a 45 s stall; up to its 30 min timeout). Now
    its clean-up begins at once: the frozen workers are sent SIGTERM within seconds."""
    scenario, env = _examples_replay(tmp_path, kafka_bootstrap)
    err = tmp_path / "replay.err"
    frozen: list[int] = []
    with (
        err.open("wb") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "chainwatch", "replay", str(scenario)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=ROOT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ) as replay,
    ):
        try:
            wait_for(
                lambda: "replay: publishing:" in err.read_text() or replay.poll() is not None,
                timeout_s=180,
                what="the replay's publishing",
            )
            assert replay.poll() is None, err.read_text()
            frozen = _children(replay.pid)
            assert frozen, "no worker found"
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            said_before = len(err.read_text())
            wait_for(
                lambda: "waiting for the engine" in err.read_text()[said_before:],
                timeout_s=60,
                what="a window's wait for the stopped engine",
            )
            replay.send_signal(signal.SIGINT)
            # before the fix: nothing for minutes (the wait ran on)
            wait_for(
                lambda: all(_sigterm_pending(pid) for pid in frozen),
                timeout_s=15,
                what="the workers' stop (SIGTERM) after Ctrl-C",
            )
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            status = replay.wait(timeout=90)
        finally:
            for pid in frozen:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)
            if replay.poll() is None:
                replay.kill()
                replay.wait()
    said = err.read_text().strip().splitlines()
    assert status == 130, said
    assert re.fullmatch(
        r"error: interrupted; replay run \w+ stopped, its topics, consumer group and "
        r"worker state were deleted",
        said[-1],
    ), said


def test_a_stop_signal_started_ignored_stays_ignored() -> None:
    """`nohup chainwatch replay ... &`: SIGHUP is ignored from the start, and a logout must
    not stop the run; SIGTERM, not ignored, is taken as Ctrl-C. All restored after."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_signals_as_ctrl_c():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert callable(signal.getsignal(signal.SIGTERM))
            assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


#: A run whose main task is busy when a stop signal comes: where the CI run's replay was.
BUSY_RUN = """
import asyncio, os, signal, sys, time
from chainwatch.process import stop_signals_as_ctrl_c

async def main() -> None:
    try:
        for turn in range(500):
            if turn == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # its handler runs inside this task
            spin = time.monotonic()
            while time.monotonic() - spin < 0.01:
                pass
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        print("cancelled", flush=True)
        raise

with stop_signals_as_ctrl_c():
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
"""


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["SIGINT-default", "SIGINT-ignored"])
def test_a_sigterm_while_the_main_task_runs_cancels_it_as_ctrl_c_does(sigint_ignored: bool) -> None:
    """Started with SIGINT ignored, a SIGTERM that came while the replay's main task ran
    raised KeyboardInterrupt inside that task: the replay still cleaned up, but asyncio then
    printed "Task exception was never retrieved" with a traceback under the one-line
    message (a CI run's failure). Either way the task must be cancelled, as Ctrl-C does,
    and `asyncio.run` end in KeyboardInterrupt, with nothing on stderr."""
    sigint = signal.SIG_IGN if sigint_ignored else signal.SIG_DFL
    done = subprocess.run(
        [sys.executable, "-c", BUSY_RUN],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )
    assert (done.stdout, done.stderr) == ("cancelled\nKeyboardInterrupt\n", "")


def _examples_replay(tmp_path: Path, kafka_bootstrap: str) -> tuple[Path, dict[str, str]]:
    """The worked examples as one scenario file, and a child's environment replaying it
    on `kafka_bootstrap` with its own data dir (no CHAINWATCH_ setting of the suite's)."""
    scenario = tmp_path / "march.ndjson"
    scenario.write_bytes(
        b"".join(p.read_bytes() for p in sorted((ROOT / "examples").glob("example_*.ndjson")))
    )
    env = environ_without_settings()
    env |= {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
    }
    return scenario, env
