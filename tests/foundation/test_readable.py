"""The suite's wait for something to read takes descriptors past select()'s 1024."""

from __future__ import annotations

import os
import socket

from readable import readable_within


def test_a_socket_numbered_past_1024_is_waited_on() -> None:
    """One xdist session running half the suite holds more than 1024 descriptors (chDB's
    threads); `select.select` raised "filedescriptor out of range" on the next socket."""
    writer, reader = socket.socketpair()
    high = os.dup2(reader.fileno(), 1100)
    try:
        assert not readable_within(high, 0.05)
        writer.sendall(b"x")
        assert readable_within(high, 10)
    finally:
        os.close(high)
        writer.close()
        reader.close()
