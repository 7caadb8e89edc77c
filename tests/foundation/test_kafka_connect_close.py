"""A kafka-python connect that fails closes its socket (chainwatch.kafka_connect_close).

kafka-python's `create_connection` (what its connection manager calls for every connect
and reconnect to a broker) dropped the socket of a connect refused or timed out, held
in a reference cycle, so it stayed open until the garbage collector ran. Loaded full
runs of the suite showed them as `ResourceWarning: unclosed <socket.socket ...
laddr=('0.0.0.0', port)>` in later tests (test_sink_start_stopped, test_view_migration,
test_webhook_attempts): traced with tracemalloc to `kafka/net/inet.py`, from
kafka-python admin clients whose broker was stopped or not yet up
(test_producer_stop_frozen_broker's own broker, test_sink_kafka_reset's rebuilt one).
Here each socket kafka-python makes is held by the test (none is collected, which would
close it) and must be closed once the connect has failed (the suite's conftest applies
the fix, as `chainwatch.kafka_start` does for every client of ours).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from kafka.errors import KafkaConnectionError
from kafka.net.inet import KafkaNetSocket, create_connection
from kafka.net.selector import NetworkSelector


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    """Every socket kafka-python's connects make, held here."""
    sockets: list[socket.socket] = []
    make = KafkaNetSocket.socket

    def held(self: KafkaNetSocket, *args: object) -> socket.socket:
        sockets.append(make(self, *args))  # type: ignore[arg-type]
        return sockets[-1]

    monkeypatch.setattr(KafkaNetSocket, "socket", held)
    return sockets


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound and not listening: a connect to it is refused at once."""
    with socket.socket() as gone:
        gone.bind(("127.0.0.1", 0))
        yield gone.getsockname()[1]


def _connect(port: int, timeout_at: float | None) -> None:
    net = NetworkSelector()
    try:
        net.run(create_connection, net, "127.0.0.1", port, (), None, timeout_at)
    finally:
        net.close()


def test_a_refused_connect_closes_its_socket(made: list[socket.socket], refused_port: int) -> None:
    with pytest.raises(KafkaConnectionError, match="ECONNREFUSED"):
        _connect(refused_port, time.monotonic() + 30)
    assert len(made) == 1
    assert made[0].fileno() == -1, f"left open: {made[0]}"


def test_a_timed_out_connect_closes_its_socket(
    made: list[socket.socket], refused_port: int
) -> None:
    """A deadline already past: kafka-python's connect gives up before it tries."""
    with pytest.raises(KafkaConnectionError, match="timed out"):
        _connect(refused_port, time.monotonic())
    assert len(made) == 1
    assert made[0].fileno() == -1, f"left open: {made[0]}"


def test_every_kafka_python_client_of_ours_has_it() -> None:
    """`chainwatch.kafka_start`, which makes all of them, applies it when imported (this
    suite's conftest applies it too, so a fresh process tells)."""
    check = (
        "from kafka.net.inet import KafkaNetSocket\n"
        "before = KafkaNetSocket.sock_connect\n"
        "import chainwatch.kafka_start\n"
        "from chainwatch.kafka_connect_close import _sock_connect\n"
        "assert before is not _sock_connect, 'applied before kafka_start'\n"
        "assert KafkaNetSocket.sock_connect is _sock_connect\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
