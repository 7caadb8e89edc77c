"""Children chainwatch starts stop by themselves when it dies (chainwatch.lifeline).

A `chainwatch replay` killed with SIGKILL left its workers running for ever: they kept
the run's consumer group alive, so `chainwatch runs delete` refused the run as still
running; a SIGKILLed demo left its five children so. Checked with the real processes:
a replay and a demo SIGKILLed once their children run, each child must end (its graceful
stop, exit `PARENT_GONE_EXIT`, one line saying why) within a bound far past its stop
deadline, and the replay's run must then be deletable. The watch is opt-in: a worker
started by hand, with stdin closed and its parent gone, runs on.

Processes are waited for through a pidfd (readable once the process has ended, also
one that is not this test's child), never by a sleep; a pidfd also keeps a kill in the
clean-up from reaching a reused pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from child_env import environ_without_settings
from kafka.errors import KafkaError
from readable import readable_within

from chainwatch import cli_context, lifeline
from chainwatch.cli import main
from chainwatch.kafka_admin import admin_client
from chainwatch.lifeline import OPTION, PARENT_GONE_EXIT
from chainwatch.settings import Settings
from tests.sinks.sink_harness import wait_for

ROOT = Path(__file__).resolve().parents[2]

ATTEMPT_S = "0.5"
"""`CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S` of a worker waiting for a Kafka that is not there:
each attempt to reach it takes that long (15 s by default). Its second attempt still comes
1.5 s after its first (a 1 s back-off between them), and a lifeline ends its process within
milliseconds of end-of-file; at 2 s the test waited ~3 s more for the same proof."""

ENDS_WITHIN_S = 180.0
"""A stop takes seconds; its deadline is 30 s (35 s the gateway's): far past both, on a
loaded machine too."""


def _env(data_dir: Path, bootstrap: str, **more: str) -> dict[str, str]:
    env = environ_without_settings()
    return env | {
        "CHAINWATCH_DATA_DIR": str(data_dir),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CHAINWATCH_LOG_FORMAT": "json",
        **more,
    }


def _lines(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    text = log.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    return [line for line in _lines(log) if line.get("event") == event]


def _ended(pidfd: int, timeout_s: float) -> bool:
    return readable_within(pidfd, timeout_s)


@contextlib.contextmanager
def _watched(pid: int) -> Iterator[int]:
    """A pidfd of `pid`; the process is killed on the way out if it still runs."""
    pidfd = os.pidfd_open(pid)
    try:
        yield pidfd
    finally:
        if not _ended(pidfd, 0):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)


def _at_once(line: dict[str, Any]) -> bool:
    """The last line of a process whose parent died before its own stop handling."""
    return line.get("event") == "process_stopped" and "before its own stop handling" in str(
        line.get("stopped")
    )


def _signalled(line: dict[str, Any]) -> bool:
    """A SIGTERM's line: ours, or faust's in the worker (it handles the worker's signals)."""
    return (line.get("event") == "process_signalled" and line["signal"] == "SIGTERM") or str(
        line.get("event")
    ).endswith("Signal received: 15 (15)")


def _stopped_because_the_parent_died(log: Path, process: str) -> None:
    """One `process_parent_gone` line, then the graceful stop a SIGTERM starts (or, for a
    process still starting, before its own stop handling, the exit at once), and the exit
    status told by the last line."""
    text = log.read_text(errors="replace")[-4000:]
    lines = _lines(log)
    gone = [n for n, line in enumerate(lines) if line.get("event") == "process_parent_gone"]
    assert [lines[n]["process"] for n in gone] == [process], text
    after = lines[gone[0] + 1 :]
    assert any(_signalled(line) for line in after) or [_at_once(line) for line in after] == [
        True
    ], text
    assert lines[-1]["event"] == "process_stopped", text
    assert lines[-1]["outcome"] == f"exit {PARENT_GONE_EXIT}", text


@pytest.mark.slow
def test_a_child_stops_as_on_sigterm_once_its_parent_is_gone_and_exits_non_zero(
    tmp_path: Path,
) -> None:
    """This test is the parent: it closes its end of the pipe, as the kernel does for a
    process that dies. The worker waits for a Kafka that is not there (port 9)."""
    log = tmp_path / "worker.log"
    read_end, write_end = os.pipe()
    try:
        with (
            log.open("wb") as out,
            subprocess.Popen(
                [sys.executable, "-m", "chainwatch", f"{OPTION}={read_end}", "worker"],
                pass_fds=(read_end,),
                env=_env(tmp_path / "data", "127.0.0.1:9"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            ) as worker,
        ):
            try:
                wait_for(
                    lambda: _events(log, "process_starting") or worker.poll() is not None,
                    timeout_s=120,
                    what="the worker to start",
                )
                assert worker.poll() is None, log.read_text()  # alive while the parent is
                os.close(write_end)
                write_end = -1
                status = worker.wait(timeout=ENDS_WITHIN_S)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)
    assert status == PARENT_GONE_EXIT, log.read_text()[-4000:]
    _stopped_because_the_parent_died(log, "worker")


@pytest.mark.parametrize("command", ["worker", "gateway"])
def test_a_child_whose_parent_died_before_it_started_exits_non_zero_not_by_the_signal(
    tmp_path: Path, command: str
) -> None:
    """End-of-file at the first read, while the child still imports: its SIGTERM to
    itself came before any handler of its own, and the default ended it by the signal."""
    read_end, write_end = os.pipe()
    os.close(write_end)  # the parent is gone already
    try:
        child = subprocess.run(
            [sys.executable, "-m", "chainwatch", f"{OPTION}={read_end}", command],
            pass_fds=(read_end,),
            env=_env(tmp_path / "data", "127.0.0.1:9"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        os.close(read_end)
    said = child.stdout + child.stderr
    assert child.returncode == PARENT_GONE_EXIT, said[-4000:]
    events = [json.loads(line) for line in said.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events][-2:] == ["process_parent_gone", "process_stopped"], said
    assert _at_once(events[-1]), said
    assert events[-1]["outcome"] == f"exit {PARENT_GONE_EXIT}", said


@pytest.mark.slow
def test_a_worker_started_by_hand_runs_on_with_stdin_closed_and_its_parent_gone(
    tmp_path: Path,
) -> None:
    """`chainwatch worker <&- &` from a shell that then exits: no option, no watch. It
    waits for a Kafka that is not there; its second attempt to reach it proves it ran
    well past the moment it could have read end-of-file on stdin, or seen its parent go."""
    log = tmp_path / "worker.log"
    started = subprocess.run(
        ["sh", "-c", '"$0" -m chainwatch worker <&- >"$1" 2>&1 & echo $!', sys.executable, log],
        env=_env(tmp_path / "data", "127.0.0.1:9", CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S=ATTEMPT_S),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    with _watched(int(started.stdout)) as pidfd:
        wait_for(
            lambda: (
                any(u["attempt"] >= 2 for u in _events(log, "kafka.unreachable"))
                or _ended(pidfd, 0)
            ),
            timeout_s=120,
            what="the worker's second attempt to reach Kafka",
        )
        assert not _ended(pidfd, 0), log.read_text()[-4000:]
        assert _events(log, "process_parent_gone") == []
        assert _events(log, "process_signalled") == []
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        assert _ended(pidfd, ENDS_WITHIN_S)
    assert _lines(log)[-1]["event"] == "process_stopped"
    assert _lines(log)[-1]["outcome"] == "ok"


def test_a_lifeline_that_is_no_pipe_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(cli_context.state, "settings", Settings())  # none cached after
    with (tmp_path / "file").open("w") as file:
        fd = file.fileno()
        assert main([OPTION, str(fd), "config"]) == 2
    said = capsys.readouterr().err
    assert f"{OPTION} {fd}: not an open pipe" in said
    assert len(said.strip().splitlines()) == 1, said


_PARENT_WITHOUT_STDIO = """
import os, sys
from chainwatch.lifeline import start_child
with open(sys.argv[1], "wb") as log:  # as start_workers and the demo: the log, then the child
    child = start_child(["config"], env=dict(os.environ), log_file=log)
sys.exit(child.wait(timeout=60))
"""


def test_a_parent_started_with_its_stdio_closed_still_gives_its_children_a_lifeline(
    tmp_path: Path,
) -> None:
    """`chainwatch replay ... <&- >&-`: the child's log took fd 0 and the pipe 1 and 3, so
    the child was handed fd 1, its own stdout (its log), and refused it as no pipe."""
    log = tmp_path / "child.log"
    parent = subprocess.run(
        ["sh", "-c", '"$0" -c "$1" "$2" <&- >&-', sys.executable, _PARENT_WITHOUT_STDIO, log],
        env=_env(tmp_path / "data", "127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert parent.returncode == 0, (parent.stderr, log.read_text())
    assert "not an open pipe" not in log.read_text()


def test_where_no_descriptor_can_be_handed_to_a_child_it_starts_without_a_lifeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows: its `subprocess` asserts `not pass_fds` (CPython's Windows branch), so a
    replay there could start no worker at all; stood in for here."""
    started: list[list[str]] = []

    def windows_popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        assert not kwargs.get("pass_fds"), "pass_fds not supported on Windows."
        started.append(args)
        return real_popen(args, **kwargs)

    real_popen = subprocess.Popen
    monkeypatch.setattr(lifeline, "_PASSES_FDS", False, raising=False)
    monkeypatch.setattr(subprocess, "Popen", windows_popen)
    with (tmp_path / "child.log").open("wb") as log:
        child = lifeline.start_child(
            ["config"], env=_env(tmp_path / "data", "127.0.0.1:9"), log_file=log
        )
    assert child.wait(timeout=120) == 0, (tmp_path / "child.log").read_text()
    assert not any(arg.startswith(OPTION) for arg in started[0])


def _children(pid: int) -> list[int]:
    return [
        int(child)
        for children in Path(f"/proc/{pid}/task").glob("*/children")
        for child in children.read_text().split()
    ]


def _members(bootstrap: str, group: str) -> int:
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        described = admin.describe_groups([group]).get(group) or {}
    except KafkaError:  # no coordinator yet (a fresh broker's offsets topic): none
        return 0
    finally:
        admin.close()
    return len(described.get("members") or [])


def _runs_delete(
    run_id: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`chainwatch runs delete run_id` in this process: (exit status, stdout, stderr). A
    process of its own cost the test a Python start-up and chainwatch's imports twice
    (~1-1.5 s each on a loaded machine); the command's path is the same."""
    capsys.readouterr()  # what came before is not the command's
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(cli_context.state, "settings", settings)  # none cached after
        status = main(["runs", "delete", run_id])
    said = capsys.readouterr()
    return status, said.out, said.err


@pytest.mark.integration
@pytest.mark.slow
def test_the_worker_of_a_replay_killed_with_sigkill_stops_and_its_run_can_be_deleted(
    tmp_path: Path, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The replay is frozen (SIGSTOP) as soon as its worker exists, so it can neither go on
    nor stop the worker itself; once the worker is in the run's group, `chainwatch runs
    delete` refuses the run ("Stop its replay first"), the replay gets SIGKILL, and the
    worker must then leave the group by its graceful stop and end: the run is deleted."""
    data = tmp_path / "data"
    env = _env(data, kafka_bootstrap)
    settings = Settings(data_dir=data, kafka={"bootstrap_servers": kafka_bootstrap})
    scenario = ROOT / "examples" / "example_1_on_time.ndjson"
    with subprocess.Popen(
        [sys.executable, "-m", "chainwatch", "replay", str(scenario)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    ) as replay:
        try:
            children = wait_for(
                lambda: _children(replay.pid) or replay.poll() is not None,
                timeout_s=120,
                what="the replay's worker",
            )
            replay.send_signal(signal.SIGSTOP)
            assert replay.poll() is None, "the replay ended before its worker started"
            (worker,) = children
            (log,) = (data / "logs").glob("replay-*-worker0.log")  # opened before the start
            run_id = re.fullmatch(r"replay-(.+)-worker0\.log", log.name)
            assert run_id is not None
            with _watched(worker) as pidfd:
                wait_for(
                    lambda: _members(kafka_bootstrap, f"replay-{run_id[1]}") or _ended(pidfd, 0),
                    timeout_s=180,
                    what="the worker in the run's group",
                )
                status, _, said = _runs_delete(run_id[1], settings, capsys)
                assert status == 1, said
                assert "Stop its replay first" in said
                replay.kill()
                replay.wait()
                assert _ended(pidfd, ENDS_WITHIN_S), log.read_text()[-4000:]
        finally:
            if replay.poll() is None:
                replay.kill()
                replay.wait()
    _stopped_because_the_parent_died(log, "worker")
    status, out, said = _runs_delete(run_id[1], settings, capsys)
    assert status == 0, said
    assert f"deleted run {run_id[1]}: consumer group replay-{run_id[1]}" in out


DEMO_CHILDREN = ("worker", "sink", "notify", "gateway", "simulator")


@pytest.mark.integration
@pytest.mark.slow
def test_the_children_of_a_demo_killed_with_sigkill_stop(
    tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    """Each of the five ends; the four with a graceful stop log it and exit non-zero, the
    simulator (no graceful stop: it exits at once) says why first."""
    data = tmp_path / "data"
    prefix = f"{unique('demo')}."
    env = _env(data, kafka_bootstrap, CHAINWATCH_KAFKA__TOPIC_PREFIX=prefix)
    out = tmp_path / "demo.out"
    try:
        with (
            out.open("wb") as stdout,
            subprocess.Popen(
                [sys.executable, "-m", "chainwatch", "demo"],
                env=env,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            ) as demo,
        ):
            try:
                wait_for(
                    lambda: b"started simulator" in out.read_bytes() or demo.poll() is not None,
                    timeout_s=240,
                    what="the demo's children to start",
                )
                assert demo.poll() is None, out.read_text()
                said = re.findall(r"started (\w+) \(pid (\d+)", out.read_text())
                pids = {name: int(pid) for name, pid in said}
                assert sorted(pids) == sorted(DEMO_CHILDREN), out.read_text()
                with contextlib.ExitStack() as stack:
                    pidfds = {
                        name: stack.enter_context(_watched(pid)) for name, pid in pids.items()
                    }
                    demo.kill()
                    demo.wait()
                    for name, pidfd in pidfds.items():
                        log = data / "logs" / f"demo-{name}.log"
                        assert _ended(pidfd, ENDS_WITHIN_S), f"{name}: {log.read_text()[-4000:]}"
            finally:
                if demo.poll() is None:
                    demo.kill()
                    demo.wait()
        for name in DEMO_CHILDREN:
            log = data / "logs" / f"demo-{name}.log"
            if name == "simulator":
                # no graceful stop of its own: it exits at once, after this line
                gone = _events(log, "process_parent_gone")
                assert [g["process"] for g in gone] == ["simulate"], log.read_text()[-4000:]
            else:
                process = {"notify": "notifier"}.get(name, name)  # as its own lines name it
                _stopped_because_the_parent_died(log, process)
    finally:
        _delete_demo_topics(kafka_bootstrap, prefix)


def _delete_demo_topics(bootstrap: str, prefix: str) -> None:
    """The run's topics (`<prefix>demo-<run>.*`) and its engine's (`demo-<run>-*`)."""
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        topics = admin.list_topics()
        runs = {t[len(prefix) :].split(".", 1)[0] for t in topics if t.startswith(prefix)}
        doomed = [t for t in topics if t.startswith((prefix, *(f"{run}-" for run in runs)))]
        if doomed:
            admin.delete_topics(doomed)
    finally:
        admin.close()
