"""The local broker is warned about, and given, enough open files for its partitions.

A broker kept for days of test runs (every test makes its own topics) gathered
~19,800 partition directories and died of "Too many open files" in the middle of
a suite run, with nothing telling its developer beforehand.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from chainwatch.local_kafka import open_files_warning

WAIT_S = 10.0


def _partitions(data: Path, count: int) -> None:
    for i in range(count):
        (data / f"scans-{i}").mkdir(parents=True)


def test_partitions_near_the_open_file_limit_are_warned_about(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _partitions(data, 50)
    (data / "meta.properties").write_text("")  # files and other names are not partitions
    (data / "lost+found").mkdir()
    warning = open_files_warning(data, 100)
    assert warning is not None
    assert "50 partitions" in warning
    assert "open-file limit of 100" in warning
    assert str(data) in warning
    assert "chainwatch kafka stop" in warning


def test_few_partitions_or_no_data_give_no_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert open_files_warning(data, 100) is None  # not formatted yet
    _partitions(data, 49)
    assert open_files_warning(data, 100) is None


def test_the_broker_is_launched_with_the_hard_open_file_limit(tmp_path: Path) -> None:
    # Launched from a fresh process with a low soft limit: lowering this test process's
    # own limit failed under xdist, where a worker that ran many tests holds more than
    # 256 descriptors and the launch's pipes then find none free (EMFILE).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = tmp_path / "limit"
    low = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    shell = f"ulimit -n > {out}.tmp && mv {out}.tmp {out}"
    launch = (
        "from pathlib import Path\n"
        "from chainwatch.local_kafka import _launch_detached\n"
        f"_launch_detached(['/bin/sh', '-c', {shell!r}], cwd=Path({str(tmp_path)!r}), "
        f"log=Path({str(tmp_path / 'log')!r}))\n"
    )
    subprocess.run(
        [sys.executable, "-c", launch],
        timeout=120,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)),
    )
    deadline = time.monotonic() + WAIT_S
    while not out.exists():
        assert time.monotonic() < deadline, "the launched process never wrote its limit"
        time.sleep(0.05)
    expected = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert out.read_text().strip() == expected


def _low_open_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


def test_kafka_status_warns_when_the_partitions_near_the_limit(tmp_path: Path) -> None:
    _partitions(tmp_path / "kafka" / "data", 70)
    env = {**os.environ, "CHAINWATCH_DATA_DIR": str(tmp_path)}
    env.pop("CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS", None)
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "kafka", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        preexec_fn=_low_open_file_limit,
    )
    assert result.returncode == 1  # not running
    assert "kafka not running" in result.stdout
    assert "70 partitions" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
