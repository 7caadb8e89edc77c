"""The suite's broker ports stay below the kernel's ephemeral range (tests/suite_ports.py).

A second broker of a worksteal run, on 41104 (a base of 41092), could not bind its port:
41104 lies in Linux's ephemeral range, where an outgoing connection may hold it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from suite_hook import SUITE_HOOK_CONFTEST, hook_env
from suite_ports import LINUX_EPHEMERAL, ephemeral_range, refusal, session_ports

LINUX = range(LINUX_EPHEMERAL[0], LINUX_EPHEMERAL[1] + 1)


def test_each_session_has_its_own_block_of_broker_ports() -> None:
    assert list(session_ports(29092, 0)) == list(range(29092, 29100))
    assert list(session_ports(29092, 1)) == list(range(29102, 29110))


def test_the_defaults_and_the_hog_runs_base_are_taken_for_two_sessions() -> None:
    assert refusal(29092, 2, LINUX) is None
    assert refusal(31092, 2, LINUX) is None
    assert refusal(32758 - 8, 2, LINUX) is None  # the last block ends at 32767
    assert refusal(61000, 2, LINUX) is None  # above the range is as good


def test_a_base_reaching_into_the_ephemeral_range_is_refused_naming_the_highest_that_is_not() -> (
    None
):
    said = refusal(41092, 2, LINUX)
    assert said is not None
    assert "41092-41109" in said
    assert "32768-60999" in said
    assert "at most 32750" in said
    assert refusal(32758 - 7, 2, LINUX) is not None  # its last port is 32768
    assert refusal(31092, 200, LINUX) is not None  # 200 sessions reach it too
    assert refusal(65529, 1, LINUX) is not None  # its last port is past 65535


def test_the_range_is_this_host_s_and_linux_s_where_it_cannot_be_read(tmp_path: Path) -> None:
    configured = tmp_path / "ip_local_port_range"
    configured.write_text("40000\t50000\n")
    assert ephemeral_range(configured) == range(40000, 50001)
    assert ephemeral_range(tmp_path / "absent") == LINUX


def _pytest(folder: Path, base: str) -> subprocess.CompletedProcess[str]:
    (folder / "conftest.py").write_text(SUITE_HOOK_CONFTEST)
    (folder / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:cov", "-o", "addopts=", str(folder)],
        cwd=folder, env=hook_env(CHAINWATCH_TEST_KAFKA_PORT=base),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_suite_refuses_a_base_port_in_the_range_before_any_test_runs(tmp_path: Path) -> None:
    low = ephemeral_range()[0]
    refused = _pytest(tmp_path, str(low))
    assert refused.returncode == 4, refused.stdout + refused.stderr  # pytest's usage error
    assert "ephemeral range" in refused.stderr
    assert "test_nothing" not in refused.stdout
    taken = _pytest(tmp_path, str(min(29092, low - 8)))
    assert taken.returncode == 0, taken.stdout + taken.stderr
