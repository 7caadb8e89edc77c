"""An admin client whose close does not end is left behind, and the command goes on.

kafka-python's `KafkaAdminClient.close()` joins the client's I/O thread with no
timeout. That thread resolves a broker's name with `getaddrinfo`, which has no timeout
either, so a resolver that stops answering held the close, and the command, for as
long as it did not answer. No DNS is used here: `socket.getaddrinfo` is replaced by
one that, once the client has started, hangs for lookups made on kafka-python's I/O
threads and passes every other lookup on.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from dead_servers import outcome_within
from structlog.testing import capture_logs

from chainwatch.kafka_admin import admin_client, close_admin

IO_THREAD = "kafka-io"
"""How kafka-python names a client's I/O thread."""


class StoppedResolver:
    """The system's resolver, until `stop()`: then kafka-python's I/O threads' lookups
    hang until the test ends."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.asked = threading.Event()
        self.release = threading.Event()

    def stop(self) -> None:
        self.stopped.set()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[StoppedResolver]:
    made = StoppedResolver()
    system = socket.getaddrinfo

    def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> object:
        if made.stopped.is_set() and threading.current_thread().name.startswith(IO_THREAD):
            made.asked.set()
            made.release.wait(120)  # a resolver that does not answer, until the test ends
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return system(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield made
    made.release.set()


def test_a_close_that_does_not_end_is_left_behind_with_one_warning(
    kafka_bootstrap: str, resolver: StoppedResolver
) -> None:
    admin = admin_client(kafka_bootstrap, request_timeout_s=15)
    resolver.stop()

    def list_topics() -> None:
        with contextlib.suppress(Exception):  # it fails once the close is done
            admin.list_topics()

    asking = threading.Thread(target=list_topics, daemon=True)
    asking.start()  # it connects to the broker the bootstrap named: a lookup on the I/O thread
    assert resolver.asked.wait(30), "the admin client's I/O thread looked up no name"

    with capture_logs() as logs:
        assert outcome_within(30, lambda: close_admin(admin, timeout_s=1)) is None
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("kafka.admin_close_timed_out", "warning")
    ]

    resolver.release.set()  # the close left behind ends, as the lookup does
    left = [t for t in threading.enumerate() if "the admin client's close" in t.name]
    for thread in [*left, asking]:
        thread.join(30)
        assert not thread.is_alive()
