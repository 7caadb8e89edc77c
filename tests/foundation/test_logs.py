"""Error logs carry the traceback, in both formats, and never a frame's local variables."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_FAIL_WITH_A_SECRET_IN_SCOPE = """
import logging, sys
from chainwatch.logs import configure_logging, get_logger

configure_logging("info", sys.argv[1])

def authorise(header):
    token = header.removeprefix("Bearer ")
    raise PermissionError(f"unknown token of {len(token)} characters")

for log in (get_logger("chainwatch.test"), logging.getLogger("faust.test")):
    try:
        authorise("Bearer s3cr3t-t0ken-of-a-plant")
    except PermissionError:
        log.exception("request failed")
"""


def _stderr_of(fmt: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _FAIL_WITH_A_SECRET_IN_SCOPE, fmt],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.slow
def test_a_json_error_line_carries_the_traceback_as_text() -> None:
    lines = [json.loads(line) for line in _stderr_of("json").splitlines()]
    assert [line["logger"] for line in lines] == ["chainwatch.test", "faust.test"]
    for line in lines:
        assert line["level"] == "error"
        assert "exc_info" not in line
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert "in authorise" in line["exception"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_traceback_prints_local_variables(fmt: str) -> None:
    """rich's formatter (structlog's default on a console) printed every frame's locals:
    here the bearer token an exception happened beside."""
    err = _stderr_of(fmt)
    assert err.count("in authorise") == 2  # both tracebacks are there ...
    assert "unknown token of 23 characters" in err
    assert "t0ken-of-a-plant" not in err  # ... but no frame's variables


_AIOKAFKA_FAILURES = """
import logging, sys
from aiokafka import errors
from chainwatch.logs import configure_logging

configure_logging("info", "json")
coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
coordinator.error(
    "Group Coordinator Request failed: %s", errors.GroupCoordinatorNotAvailableError()
)
logging.getLogger("aiokafka.consumer.fetcher").error(
    "Failed fetch offsets from %s: %s", 1, errors.NotLeaderForPartitionError()
)
coordinator.error("Attempt to join group failed due to fatal error: %s",
                  errors.GroupAuthorizationFailedError("g"))
logging.getLogger("chainwatch.test").error("ours: %s", errors.NotLeaderForPartitionError())
client = logging.getLogger("aiokafka")  # the broker stopped: the client reconnects by itself
client.error("Unable connect to node with id %s: %s", 1,
             ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 19092)"))
client.error("Unable to update metadata from %s", [1])
coordinator.error("Heartbeat session expired - marking coordinator dead")  # it rejoins
import ssl
client.error("Unable connect to node with id %s: %s", 1, ssl.SSLCertVerificationError("bad cert"))
"""


def test_what_aiokafka_retries_by_itself_is_a_warning_and_what_it_gives_up_on_an_error() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _AIOKAFKA_FAILURES], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["level"], line["event"].split(":")[0]) for line in lines] == [
        ("warning", "Group Coordinator Request failed"),
        ("warning", "Failed fetch offsets from 1"),
        ("error", "Attempt to join group failed due to fatal error"),
        ("error", "ours"),
        ("warning", "Unable connect to node with id 1"),  # an error line 30 times a second
        ("warning", "Unable to update metadata from [1]"),
        ("warning", "Heartbeat session expired - marking coordinator dead"),
        ("error", "Unable connect to node with id 1"),  # TLS set up wrong stays wrong
    ]
