"""A port the OS says is free now, for a server started next to listen on.

The port is free when asked and may be taken before the server binds it (a race every
such pick has): callers that start a server retry on another, and callers that want a
port nobody listens on (a refused connection) need only that nothing binds it later.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
