"""Host names resolved within a deadline.

`socket.getaddrinfo` has no timeout of its own: a resolver that does not answer (a
DNS server gone, a hung NSS module) holds the caller as long as the C library's
retries take, or for ever, and there is no socket yet that a watchdog could shut.
A lookup runs on a daemon thread; the caller waits at most its deadline, or until
it is woken (a stop), and never keeps the process alive. Callers asking for a name
whose lookup is under way wait on that one: a resolver that hangs holds one thread
per name, not one per retry of a sink that keeps trying.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
import threading
from typing import Any

AddressInfo = tuple[Any, ...]
"""One entry of `socket.getaddrinfo`: family, type, proto, canonical name, address."""

_Key = tuple[Any, ...]


class _Lookup:
    """One `getaddrinfo` under way, and the events of the callers waiting on it."""

    def __init__(self, key: _Key) -> None:
        self.key = key
        self.addresses: list[AddressInfo] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.waiting: set[threading.Event] = set()

    def run(self) -> None:
        try:
            self.addresses = list(socket.getaddrinfo(*self.key))
        except BaseException as exc:  # handed to every caller waiting on it
            self.error = exc
        finally:
            with _LOCK:
                _UNDER_WAY.pop(self.key, None)
                self.done = True
                waiting = list(self.waiting)
            for event in waiting:
                event.set()


_LOCK = threading.Lock()
_UNDER_WAY: dict[_Key, _Lookup] = {}


def is_address(host: str | bytes | None) -> bool:
    """Whether `host` is an IP address (or None): nothing to look up."""
    if host is None:
        return True
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    try:
        ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 address may name its zone
    except ValueError:
        return False
    return True


def resolve(
    host: str | bytes | None,
    port: str | int | None,
    family: int = 0,
    kind: int = 0,
    proto: int = 0,
    flags: int = 0,
    *,
    seconds: float | None,
    wake: threading.Event | None = None,
) -> list[AddressInfo] | None:
    """What `socket.getaddrinfo` answers (or raises) for these arguments, or None when
    `seconds` (None: no limit) passed first or `wake` was set meanwhile (the caller says
    which: it set it).
    An address is resolved at once, on the caller's thread."""
    if is_address(host):
        return list(socket.getaddrinfo(host, port, family, kind, proto, flags))
    key = (host, port, family, kind, proto, flags)
    woken = wake or threading.Event()
    with _LOCK:
        lookup = _UNDER_WAY.get(key)
        if lookup is None:
            lookup = _UNDER_WAY[key] = _Lookup(key)
            name = f"resolve:{host!r}"
            threading.Thread(target=lookup.run, name=name, daemon=True).start()
        lookup.waiting.add(woken)
    try:
        woken.wait(None if seconds is None else max(seconds, 0.0))
    finally:
        with _LOCK:
            lookup.waiting.discard(woken)
    if not lookup.done:
        return None
    if lookup.error is not None:
        raise copy.copy(lookup.error)  # one per caller: a traceback is the raiser's
    return list(lookup.addresses or [])


def host_text(host: str | bytes | None) -> str:
    """`host` as a message names it."""
    if isinstance(host, bytes):
        return host.decode("ascii", "replace")
    return str(host)
