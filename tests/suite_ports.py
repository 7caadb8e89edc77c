"""The ports of the suite's own brokers: a block per xdist session, below the ephemeral range.

Session `gw<n>` takes `PORTS_PER_SESSION` ports from `base + SESSION_STRIDE * n` (the base
is `CHAINWATCH_TEST_KAFKA_PORT`, 29092 unless set): its broker, that broker's controller,
the session's second broker with its controller (`SECOND`, conftest.py's `freezable_broker`
and `creating_broker`), and the session's secured broker's three listeners with its
controller (`SECURED`, conftest.py's `secured_kafka`). A port in the kernel's ephemeral
range (Linux: 32768-60999, /proc/sys/net/ipv4/ip_local_port_range) may be the source port of
any outgoing connection at any moment, and the suite's Kafka clients open many: a broker
started on 41104 (a base of 41092) failed to bind it ("Unable to start acceptor"), though
nothing listened there. Below the range only listeners that ask for a port by number
compete, and `LocalBroker.start` refuses a port one of them holds, naming it. So a base that
puts a session's ports into the range is refused before any test runs.

The other servers the tests start (gateways, ops endpoints, the docs' gateway) take a port
the kernel picks (a bind to port 0, the `free_port` helpers), inside the range: Linux
(4.6 on) gives a bind to port 0 a port of the other parity than the ones it takes first
for outgoing connections (odd and even ones here), so those do not collide with clients.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_BASE = 29092
SESSION_STRIDE = 10
"""Ports between two sessions' blocks (room for a few more without moving the next)."""
PORTS_PER_SESSION = 8
"""The broker, its controller, the second broker with its controller, the secured
broker's three listeners and its controller."""
SECOND = 2
"""The offset in a session's block of the second (plain) broker, its controller the next:
conftest.py's `freezable_broker` and `creating_broker`."""
SECURED = 4
"""The offset of the secured broker's first listener (three, then its controller)."""
LINUX_EPHEMERAL = (32768, 60999)
"""Linux's default `ip_local_port_range`, taken where the file cannot be read."""


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """The ports this host's kernel hands out as source ports of outgoing connections."""
    try:
        low, high = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        low, high = LINUX_EPHEMERAL
    return range(low, high + 1)


def session_ports(base: int, session: int) -> range:
    """The block of ports of xdist session `session` (0 for gw0 or no xdist)."""
    first = base + SESSION_STRIDE * session
    return range(first, first + PORTS_PER_SESSION)


def refusal(base: int, sessions: int, ephemeral: range) -> str | None:
    """Why `base` will not do for `sessions` sessions side by side, or None if it will."""
    last = session_ports(base, sessions - 1)[-1]
    if base < 1024 or last > 65535:
        return (
            f"CHAINWATCH_TEST_KAFKA_PORT={base}: the suite's ports {base}-{last} leave 1024-65535"
        )
    if base <= ephemeral[-1] and last >= ephemeral[0]:
        return (
            f"CHAINWATCH_TEST_KAFKA_PORT={base}: the suite's broker ports {base}-{last} "
            f"({sessions} session(s), {SESSION_STRIDE} ports apart) reach into the kernel's "
            f"ephemeral range {ephemeral[0]}-{ephemeral[-1]} "
            "(/proc/sys/net/ipv4/ip_local_port_range), where any outgoing connection may hold "
            f"a port a broker is to bind; take a base of at most "
            f"{ephemeral[0] - SESSION_STRIDE * (sessions - 1) - PORTS_PER_SESSION} "
            f"(the default is {DEFAULT_BASE})"
        )
    return None
