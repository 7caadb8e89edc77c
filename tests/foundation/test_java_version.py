"""The local broker needs Java 17+: an older `java` is named by `doctor` and refused by
`kafka start` in one line (Kafka 4 fails with UnsupportedClassVersionError, said only in
the broker's own log; `doctor` printed `ok` for any Java)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chainwatch.free_port import free_port
from chainwatch.local_kafka import java_major
from tests.sinks.sink_harness import wait_for


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "22-ea" 2024-03-19', 22),
        ("no version here", None),
    ],
)
def test_the_major_version_is_read_from_java_s_banner(text: str, major: int | None) -> None:
    assert java_major(text) == major


@pytest.fixture
def java_11(tmp_path: Path) -> dict[str, str]:
    """An environment whose `java` is Java 11 (a script printing its banner)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text(  # a JVM in a container says what it picked up before its version
        "#!/bin/sh\necho 'Picked up JAVA_TOOL_OPTIONS: -Xmx1g' >&2\n"
        "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2\n"
    )
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__LOCAL_PORT": str(free_port()),
        "CHAINWATCH_KAFKA__LOCAL_CONTROLLER_PORT": str(free_port()),
    }


def _chainwatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in env.items() if k != "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS"}
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_doctor_fails_an_old_java(java_11: dict[str, str]) -> None:
    # its Kafka check waits out the probe's deadline (nothing at the port): 1 s, not 3 s
    done = _chainwatch(java_11 | {"CHAINWATCH_KAFKA__PROBE_TIMEOUT_S": "1"}, "doctor")
    assert done.returncode == 1
    (line,) = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["java"]]
    assert line.split()[0] == "FAIL"
    assert "Kafka needs Java 17+" in line


@pytest.mark.slow
def test_kafka_start_refuses_an_old_java_in_one_line(java_11: dict[str, str]) -> None:
    done = _chainwatch(java_11, "kafka", "start")
    assert done.returncode == 1
    assert "is Java 11" in done.stderr
    assert "Kafka needs Java 17+" in done.stderr
    assert "Traceback" not in done.stderr
    assert "fetching" not in done.stdout + done.stderr  # refused before any download


def test_a_tool_that_does_not_answer_fails_its_doctor_check_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mvn -v` past its deadline was "internal error: TimeoutExpired" for the whole doctor."""
    from chainwatch import doctor

    mvn = tmp_path / "mvn"
    mvn.write_text("#!/bin/sh\nexec sleep 30\n")  # a JVM that never prints its banner
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(doctor, "TOOL_TIMEOUT_S", 0.3)
    check = doctor._tool("mvn", ["-v", "-B"], "install Maven")
    assert (check.name, check.ok) == ("mvn", False)
    assert check.detail == "`mvn -v -B` did not answer within 0.3 s; install Maven"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone but not reaped


def test_a_broker_launch_that_does_not_return_is_one_line_and_leaves_no_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chainwatch import local_kafka
    from chainwatch.errors import UserError

    pidfile = tmp_path / "broker.pid"
    # the shell starts the broker, then does not return (an overloaded machine)
    hangs = f"; while [ ! -e {pidfile} ]; do sleep 0.05; done; exec sleep 600"
    monkeypatch.setattr(local_kafka, "_LAUNCH_SCRIPT", local_kafka._LAUNCH_SCRIPT + hangs)
    # room for the shell to start the broker (a few forks: under 0.1 s with two CPU hogs)
    # before the deadline; the test waits all of it (5 s before)
    monkeypatch.setattr(local_kafka, "LAUNCH_TIMEOUT_S", 2.0)
    broker = [
        "/bin/sh",
        "-c",
        f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; exec sleep 600",
    ]
    log = tmp_path / "broker.log"
    pid = 0
    try:
        with pytest.raises(UserError) as failed:
            local_kafka._launch_detached(broker, cwd=tmp_path, log=log)
        assert str(failed.value) == (
            "could not launch the Kafka broker: the shell that starts it in the background did "
            f"not return within 2 s (is the machine overloaded?); its log: {log}"
        )
        assert pidfile.exists()  # the broker had started (the shell waited for it)
        pid = int(pidfile.read_text())
        wait_for(lambda: not _alive(pid), timeout_s=30, what="the broker it started to be killed")
    finally:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
