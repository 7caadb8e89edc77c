"""kafka-python producers and consumers that cannot start leave no socket or thread behind.

kafka-python leaves the socket of each connect that fails to the collector, and a
client whose start fails keeps its selector (and a consumer its I/O thread): a
process trying again leaked them at every try. These tests count what the process
holds (its open fds, each with what it is, and its threads) before and after three
failed starts against a port nothing listens on (`closed`), a listener that accepts
and never answers (`silent`) and one that answers our probe but no client
(`kafka_head`: the broker went in between), and after a start and a close on the
suite's broker. The unreachable ones run in a process of their own, so that every fd
and thread counted is the client's.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError
from readable import line_within

from chainwatch import kafka_admin
from chainwatch.kafka_admin import KafkaUnreachable
from chainwatch.kafka_start import started
from chainwatch.settings import Settings
from chainwatch.simulator_outputs.kafka_out import KafkaPublisher
from simulator.records import SimRecord

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="counts the process's fds in /proc"
)

TRIES = 3
"""Failed starts per case: a leak of one socket or thread a try shows as three."""

_SERVER = """
import sys
sys.path.insert(0, sys.argv[2])
from dead_servers import DeadServer
server = DeadServer(sys.argv[1])
print(server.port, flush=True)
sys.stdin.read()
server.close()
"""


START_S = {"closed": 0.25, "silent": 0.25, "kafka_head": 1.0}
"""Each failed start's wait, by kind. Against `closed` and `silent` no probe is answered,
whatever the load: the start waits its deadline out and fails the same way at any length,
so a quarter of a second does (a second each, three tries a case, was 2.4 s of every
case's 3.2 s). A `kafka_head` start keeps the second: its probe must be answered in time
for the client to be made and fail, which is what that case is for."""


@dataclass(frozen=True)
class Unreachable:
    kind: str
    bootstrap: str

    @property
    def start_s(self) -> float:
        return START_S[self.kind]


@pytest.fixture(params=["closed", "silent", "kafka_head"])
def unreachable(request: pytest.FixtureRequest) -> Iterator[Unreachable]:
    """A bootstrap address of a `tests/dead_servers.py` kind, served by another process."""
    tests = str(Path(__file__).resolve().parents[1])
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, request.param, tests],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdin is not None
    try:
        port = int(line_within(server.stdout, 60, "the fake broker's port"))
        yield Unreachable(request.param, f"127.0.0.1:{port}")
    finally:
        server.stdin.close()
        server.stdout.close()
        server.wait(timeout=30)


class _Held:
    """What the process holds: each open fd with what it is (`socket:[inode]`: a socket
    closed and another opened on the same number differ), and the live threads."""

    def __init__(self) -> None:
        self.fds = _open_fds()
        self.threads = set(threading.enumerate())

    def gained_since(self, before: _Held) -> list[str]:
        fds = sorted(f"fd {fd}: {what}" for fd, what in self.fds - before.fds)
        threads = sorted(f"thread {t.name}" for t in self.threads - before.threads)
        return fds + threads


def _open_fds() -> set[tuple[int, str]]:
    held = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, closed by now
            held.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
    return held


def _failing_starts(start: Callable[[], Any]) -> tuple[list[str], set[str]]:
    """What `TRIES` starts that each fail leave held (sockets finalized by the collector
    meanwhile, with their ResourceWarning, among it), and the errors they failed with."""
    unclosed: list[str] = []
    errors: set[str] = set()
    hook = sys.unraisablehook
    sys.unraisablehook = lambda raised: unclosed.append(repr(raised.exc_value))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            before = _Held()
            for _ in range(TRIES):
                try:
                    start()
                    errors.add("none: it started")
                except Exception as exc:  # the caller says which it must be
                    errors.add(type(exc).__name__)
            gained = _Held().gained_since(before)  # before the collector closes any
            gc.collect()
    finally:
        sys.unraisablehook = hook
    return gained + unclosed, errors


@pytest.mark.parametrize(
    "factory", [KafkaProducer, KafkaConsumer, KafkaAdminClient], ids=lambda f: f.__name__
)
def test_a_client_that_cannot_start_leaves_no_socket_or_thread_behind(
    factory: Any, unreachable: Unreachable
) -> None:
    """A consumer's failed start left its I/O thread and selector running, a producer's
    its selector; either's failed connects left their sockets to the collector."""
    start_ms = int(unreachable.start_s * 1000)
    gained, errors = _failing_starts(
        lambda: started(factory, unreachable.bootstrap, start_ms=start_ms)
    )
    assert gained == []
    assert errors == {"KafkaTimeoutError"}


def test_the_simulators_kafka_output_that_cannot_start_leaves_nothing_behind(
    unreachable: Unreachable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        kafka={
            "bootstrap_servers": unreachable.bootstrap,
            # its connection's start_ms; 0.5 s is the setting's floor
            "request_timeout_s": max(unreachable.start_s, 0.5),
        },  # type: ignore[arg-type]
    )
    gained, errors = _failing_starts(lambda: KafkaPublisher(settings, create_topics=False))
    assert gained == []
    assert errors == {"KafkaUnreachable"}


def test_the_simulators_kafka_output_started_and_closed_holds_nothing_more(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    record = SimRecord("scans", "PO-1", '{"order_id":"PO-1"}', 0)
    KafkaPublisher(settings).close()  # topics made, and what a first client loads once
    before = _Held()
    for _ in range(TRIES):
        publisher = KafkaPublisher(settings, create_topics=False)
        try:
            publisher.send(record)
        finally:
            publisher.close()
        assert publisher.failed == 0
    assert _Held().gained_since(before) == []


class _NoMetadata:
    def send(self, topic: str, **_kwargs: object) -> None:
        raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")


def test_a_send_kafka_does_not_take_is_one_line() -> None:
    """kafka-python's bare KafkaTimeoutError ("internal error" on the CLI) when a broker
    gone mid-run left no metadata for a topic."""
    publisher = KafkaPublisher.__new__(KafkaPublisher)  # no broker: only its send is tried
    publisher.bootstrap = "10.0.0.1:9092"
    publisher.names = lambda topic: topic  # type: ignore[assignment,method-assign]
    publisher._producer = _NoMetadata()  # type: ignore[assignment]
    with pytest.raises(KafkaUnreachable, match="did not take a record within 60 s"):
        publisher.send(SimRecord("scans", "PO-1", "{}", 0))


def test_a_start_given_up_on_is_closed_once_it_ends() -> None:
    """`bounded` abandons a start that outlives its deadline: the client it made in the
    end was held by nothing, its sockets and I/O thread running."""
    release = threading.Event()
    closed: list[str] = []
    with pytest.raises(kafka_admin.KafkaDeadlineExceeded):
        kafka_admin.bounded(
            lambda: release.wait(30) and "client",
            timeout_s=0.2,
            what="a start",
            late=closed.append,
        )
    release.set()
    for thread in threading.enumerate():
        if thread.name == "kafka-call:a start":
            thread.join(10)
    assert closed == ["client"]


def test_a_client_connected_starts_after_its_deadline_is_closed() -> None:
    """`connected` hands `bounded` the client's close: without it a start that outlived
    the deadline (the caller told "cannot reach Kafka") kept its sockets and thread."""
    release = threading.Event()
    closed: list[str] = []
    done = threading.Event()

    def close(client: str) -> None:
        closed.append(client)
        done.set()

    with pytest.raises(KafkaUnreachable, match="cannot reach Kafka"):
        kafka_admin.connected(
            lambda _start_ms: "client" if release.wait(30) else "never",
            "127.0.0.1:9",
            close=close,
            request_timeout_s=15,
            timeout_s=0.2,
        )
    release.set()
    assert done.wait(10)
    assert closed == ["client"]
