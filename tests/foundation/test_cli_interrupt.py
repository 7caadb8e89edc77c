"""Ctrl-C on any command ends with one line saying it was interrupted and what it left,
exit status 130. `chainwatch doctor` and `chainwatch runs list` ended with 130 and no word
(typer turned the `KeyboardInterrupt` into a bare exit status), where a replay, a backtest
and an import said what became of their work; the doctor also waited out its Kafka
probe's whole deadline before it could exit."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer
from child_env import environ_without_settings
from dead_servers import DeadServer

from chainwatch import cli
from tests.sinks.sink_harness import wait_for

ROOT = Path(__file__).resolve().parents[2]


def interrupted_at_its_first_kafka_request(
    command: list[str], env: dict[str, str], kafka: DeadServer, *, within_s: float
) -> tuple[int, bytes, bytes]:
    """Run `chainwatch COMMAND` against `kafka` (a server that never answers), SIGINT it
    once it has asked Kafka (mid-work: it waits there), and give it `within_s` to end:
    its exit status, stdout and stderr. The child's SIGINT is set to the default: the
    suite itself may run with it ignored (`make test &`)."""
    with subprocess.Popen(
        [sys.executable, "-m", "chainwatch", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as child:
        try:
            wait_for(
                lambda: kafka.asked.is_set() or child.poll() is not None,
                timeout_s=60,
                what="the command's first Kafka request",
            )
            assert child.poll() is None, child.communicate()
            child.send_signal(signal.SIGINT)
            stdout, stderr = child.communicate(timeout=within_s)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    return child.returncode, stdout, stderr


@pytest.mark.parametrize("log_format", ["console", "json"])
@pytest.mark.parametrize("command", [["doctor"], ["runs", "list"]], ids=["doctor", "runs-list"])
def test_ctrl_c_mid_command_says_one_line_and_exits_130(
    tmp_path: Path, command: list[str], log_format: str
) -> None:
    kafka = DeadServer("silent")  # the command waits there: it is mid-work when signalled
    env = environ_without_settings()
    env |= {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.port}",
        # far longer than the test waits: the interrupt, not a deadline, ends the command
        "CHAINWATCH_KAFKA__PROBE_TIMEOUT_S": "120",
        "CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S": "120",
        "CHAINWATCH_LOG_FORMAT": log_format,
    }
    try:
        status, stdout, stderr = interrupted_at_its_first_kafka_request(
            command, env, kafka, within_s=30
        )
    finally:
        kafka.close()
    lines = stderr.decode().strip().splitlines()
    assert status == 130, lines
    expected = f"error: interrupted; chainwatch {' '.join(command)} stopped, it changes nothing"
    if log_format == "json":
        last = json.loads(lines[-1])
        assert (last["event"], last["exit_code"], last["level"]) == (expected, 130, "error")
    else:
        assert lines[-1] == expected, lines
    assert b"Traceback" not in stderr
    assert stdout == b""


def test_ctrl_c_leaves_the_live_status_view_quietly(tmp_path: Path) -> None:
    """The live `status` view is left with Ctrl-C, as `top` and `watch` are: that is its
    ordinary end, not an interruption, so no error line and exit status 0."""
    env = environ_without_settings()
    env |= {"CHAINWATCH_DATA_DIR": str(tmp_path / "data")}
    migrated = subprocess.run(
        [sys.executable, "-m", "chainwatch", "db", "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    # on a terminal: rich's live view draws only at its end on a pipe or a file
    terminal, view = pty.openpty()
    seen = bytearray()

    def drawn() -> bool:
        while select.select([terminal], [], [], 0)[0]:
            try:
                seen.extend(os.read(terminal, 65536))
            except OSError:  # the view's side closed
                break
        return b"Latest events" in seen or child.poll() is not None

    try:
        with subprocess.Popen(
            [sys.executable, "-m", "chainwatch", "status", "--interval", "0.5"],
            env=env,
            stdout=view,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ) as child:
            try:
                wait_for(drawn, timeout_s=60, what="the status view's first picture")
                assert child.poll() is None, child.communicate()
                child.send_signal(signal.SIGINT)
                _, stderr = child.communicate(timeout=30)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.communicate()
    finally:
        os.close(view)
        os.close(terminal)
    assert (child.returncode, stderr.decode()) == (0, "")


LEFT_BY = {
    "silences add": "the silence may have been written: `chainwatch silences list` says",
    "silences expire": "the silence may have been ended: `chainwatch silences list` says",
    "silences drop-held": "the held messages dropped before it stay dropped; run it again "
    "to drop the rest",
    "deliveries resend": "the deliveries re-sent before it are logged; "
    "`chainwatch deliveries given-up` lists the rest",
}


@pytest.mark.parametrize(
    "command",
    [
        ["silences", "list"],
        ["silences", "add", "--unit", "KNIT-01", "--for", "1h", "--reason", "test"],
        ["silences", "expire", "some-silence"],
        ["silences", "drop-held", "gone"],
        ["deliveries", "given-up"],
        ["deliveries", "resend", "--dry-run"],
        ["deliveries", "resend"],
    ],
    ids=[
        "silences-list",
        "silences-add",
        "silences-expire",
        "silences-drop-held",
        "given-up",
        "dry-run",
        "resend",
    ],
)
def test_ctrl_c_ends_a_kafka_command_at_once_whatever_its_admin_call_waits_for(
    tmp_path: Path, command: list[str]
) -> None:
    """`silences` and `deliveries` ask Kafka on a thread (a partition count, a topic's
    creation); on the loop's default executor, `asyncio.run` waited at its end for that
    call after Ctrl-C, its whole deadline (~15 s by default), and a second Ctrl-C did not
    help. `deliveries resend` also let its first Ctrl-C wait for the read before it sent
    anything. Each ends within seconds with its one line, exit 130."""
    kafka = DeadServer("silent")
    subscriptions = tmp_path / "subscriptions.yaml"
    secret = "whsec_c2VjcmV0LW9mLW9wcy0wMTIzNDU2Nzg5"  # JSON is YAML
    subscriptions.write_text(
        json.dumps({"endpoints": [{"name": "ops", "url": "http://127.0.0.1:9/", "secret": secret}]})
    )
    env = environ_without_settings()
    env |= {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.port}",
        # far longer than the test waits: the interrupt, not a deadline, ends the command
        "CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S": "120",
        "CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS": str(subscriptions),
        "CHAINWATCH_WEBHOOKS__ALLOWED_NETWORKS": "127.0.0.1",
    }
    try:
        # it waited out its 125 s admin call's deadline
        status, stdout, stderr = interrupted_at_its_first_kafka_request(
            command, env, kafka, within_s=10
        )
    finally:
        kafka.close()
    lines = stderr.decode().strip().splitlines()
    path = " ".join(w for w in command if not w.startswith("-"))
    path = " ".join(path.split()[:2])
    left = LEFT_BY.get(path, "it changes nothing")
    assert (status, lines[-1:]) == (
        130,
        [f"error: interrupted; chainwatch {path} stopped, {left}"],
    ), lines
    assert b"Traceback" not in stderr
    assert stdout == b""


def _runnable_commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Every command path a user can run: the leaves, and a group that runs by itself
    (`chainwatch gateway`)."""
    subcommands = getattr(command, "commands", None)
    if path and (not subcommands or getattr(command, "invoke_without_command", False)):
        yield " ".join(path)
    for name, sub in (subcommands or {}).items():
        yield from _runnable_commands(sub, (*path, name))


def test_every_command_says_what_a_ctrl_c_leaves_or_is_known_to_only_read() -> None:
    """A command missing from both lists would say "it changes nothing" after a Ctrl-C
    whatever it changes (the table is kept by hand); `demo` was missing, and one stopped
    while it launched its broker left that broker starting without a word."""
    commands = set(_runnable_commands(typer.main.get_command(cli.app)))
    changing, reading = set(cli._LEFT_WHEN_INTERRUPTED), set(cli._READS_ONLY)
    assert not changing & reading
    assert commands - changing - reading == set(), "classify these commands"
    assert (changing | reading) - commands == set(), "no such commands"
    assert cli._interrupted(["demo"]) == (
        f"interrupted; chainwatch demo stopped, {cli._BROKER_MAY_BE_STARTING}"
    )
