"""A kafka-python connect that fails closes its socket.

kafka-python 3.0.12's `KafkaNetSocket.connect` (`kafka/net/inet.py`) makes a socket and
hands it to `sock_connect`, which raises `KafkaConnectionError` when the connect is
refused and `KafkaTimeoutError` when its time is up. Neither closes the socket, and
`create_connection` drops it: the error it keeps holds the failed frame, which holds
the socket, in a reference cycle, so the socket stayed open until the garbage collector
ran (in the test suite, a `ResourceWarning: unclosed <socket ... laddr=('0.0.0.0',
port)>` in whatever later test it ran in; a refused socket is left bound to
0.0.0.0). `kafka_start.started` only makes a client once a broker answers, but a
client's reconnects are not covered by that: a broker that stops, restarts or goes away
in between (an admin client probing a broker that is starting or stopping, a producer
through an outage) left one socket per failed connect.

`close_failed_connects` wraps `sock_connect` so the socket is closed when it raises
(any exception: a cancel too), before the error goes on as before. The proxies'
sockets (`HttpConnectProxy`, `Socks5Proxy`) inherit the method. kafka-python makes the
socket inside its network client, so like `chainwatch.no_topic_creation` this applies
to the whole process. `chainwatch.kafka_start`, through which every kafka-python
client of ours is made, applies it when imported, not `chainwatch/__init__.py`:
importing kafka-python costs a process ~0.1 s, and most of ours never use it (the
CLI, the workers, the sinks import it only when they need it). The test suite applies
it for the clients its tests make themselves (tests/conftest.py).
"""

from __future__ import annotations

import socket
from typing import Any

from kafka.net.inet import KafkaNetSocket

_kafka_sock_connect = KafkaNetSocket.sock_connect


async def _sock_connect(
    self: KafkaNetSocket,
    net: Any,
    sock: socket.socket,
    sockaddr: Any,
    timeout_at: float | None = None,
) -> socket.socket:
    """`KafkaNetSocket.sock_connect`, closing `sock` when the connect fails."""
    try:
        connected: socket.socket = await _kafka_sock_connect(
            self, net, sock, sockaddr, timeout_at=timeout_at
        )
    except BaseException:
        sock.close()  # its wait on the selector is over: `_wait_io` unregistered it
        raise
    return connected


def close_failed_connects() -> None:
    """Make every kafka-python client of this process close the socket of a connect that
    fails (idempotent; the module's docstring says why it is process-wide)."""
    KafkaNetSocket.sock_connect = _sock_connect
