"""A urllib3 pool for clickhouse-connect whose every call has one wall-clock deadline.

clickhouse-connect bounds one socket operation (`connect_timeout`, and
`send_receive_timeout` for each read): a server that answers `/ping` and then
says nothing held a query a minute, one that sends a byte now and then held it
for ever, each read succeeding within its timeout. `bound` makes a
urllib3 pool the `pool_mgr` of a server client: each HTTP request on it is armed
when it is sent, with its call's deadline (`Deadlines.call`: a call of several
requests, an insert and its column types, a read and its clean-up, ends by the
one limit, not that many), and a watchdog thread shuts the
connection's socket down once the deadline passes while the request, or the
reading of its answer, is still under way. The blocked read or write then ends
at once and the call fails: with `DeadlinePassed` ("no answer within N s") among
its causes while the answer's headers were awaited, with whatever urllib3 makes
of a closed connection while its body was read; either way `Deadlines.cut` says
why, and the call's later requests (a replay, a clean-up query) fail at once. A
request whose answer was read in time (its connection idle) is left alone.

A new connection is armed as it connects (urllib3 connects before it sends), and the
request keeps that deadline: the watchdog shuts its TLS handshake down too, and its
TCP connect, with no socket to shut yet, times out after what was left of the
deadline as the connection began (at most `connect_timeout`). `connect_timeout`
alone bounded both, 5 s each, past the call's deadline.

The host name is looked up within the same deadline (`sinks.name_lookup`): the pool
connects before it sends, and `getaddrinfo` has no timeout of its own, so a resolver
that did not answer held a new connection past its call's deadline, for ever if it
hung. Past the deadline the call fails with `DeadlinePassed` ("<host> did not resolve
within N s").

`abort()` ends every request under way at once, a lookup and a TLS handshake too (a TCP
connect under way ends by its timeout), and every later one before it is sent: a process
told to stop does not wait for a store that trickles. A request sent outside the pool
(the server's `/ping` before a client opens) is ended with them while it is registered
with `Deadlines.aborting`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.contrib.resolver.system import SystemResolver
from urllib3.exceptions import HTTPError

from sinks.name_lookup import AddressInfo, host_text, resolve


class DeadlinePassed(HTTPError):
    """A request to ClickHouse did not finish within its deadline (or was aborted)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def deadline_passed(exc: BaseException | None) -> DeadlinePassed | None:
    """The `DeadlinePassed` among `exc`'s causes and contexts, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DeadlinePassed):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class _Armed:
    """One request's deadline on one connection."""

    def __init__(self, shared: _Deadlines, conn: HTTPConnection, at: float, seconds: float) -> None:
        self.shared = shared
        self.call = shared.call
        """The call it belongs to: only a cut of the current call fails that call."""
        self.conn = conn
        self.seconds = seconds
        """The limit the message names: the call's, of which this request has what is left."""
        self.at = at
        self.active = True
        self.in_call = True
        """In `request`/`getresponse`; after them the answer is read until the connection
        is idle (urllib3-future hands it back to the pool before its body is read)."""
        self.reason: str | None = None
        """Why the request was cut (set once the watchdog or an abort fired)."""

    def fire(self, reason: str) -> None:
        # under the pool's lock, as `disarm` and `arm`: a request that ends as its deadline
        # falls due is either disarmed first (nothing cut) or cut before its connection
        # goes back to the pool; never is the next request on that connection cut instead
        with self.shared.lock:
            if not self.active:
                return
            self.active = False
            if not self.in_call and getattr(self.conn, "is_idle", False):
                return  # its answer was read in time
            self.reason = reason
            if self.call == self.shared.call:  # (an earlier call's abandoned answer: not it)
                self.shared.cut = self.shared.cut or reason
            # (during its TLS handshake the connection's socket is detached: its copy)
            for sock in (getattr(self.conn, "sock", None), getattr(self.conn, "handshaking", None)):
                if sock is not None:
                    with contextlib.suppress(OSError):  # the socket's own, not TLS's close_notify
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for all pools: fires each armed request's deadline once due."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Armed]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, armed: _Armed) -> None:
        with self._cond:
            heapq.heappush(self._heap, (armed.at, next(self._order), armed))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="clickhouse-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._cond.wait()
                    continue
                left = self._heap[0][0] - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                armed = heapq.heappop(self._heap)[2]
                armed.fire(f"no answer within {armed.seconds:g} s")


_WATCHDOG = _Watchdog()


class _Deadlines:
    """What the connections of one bounded pool share."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.aborted: str | None = None
        self.cut: str | None = None
        """Why a request of the current call was cut: the call's later requests (a retry,
        a clean-up query) fail at once with it instead of waiting out a deadline each."""
        self.lock = threading.Lock()
        self.armed: dict[int, _Armed] = {}
        self.call = 0
        """Which call of the client runs now (`Deadlines.call` counts them)."""
        self.call_ends: float | None = None
        """When the current call's deadline passes (None: outside a call, each request has
        `deadline_s` of its own)."""
        self.also_abort: list[Callable[[str], None]] = []
        """Aborts of requests outside the pool (`Deadlines.aborting`)."""

    def _ends_locked(self) -> tuple[float, float]:
        """(now, when the current request must end), or `DeadlinePassed` if it may not
        start: the pool was aborted or cut, or the call's earlier requests took all its
        time. Under `lock`."""
        refused = self.aborted or self.cut
        if refused is not None:
            raise DeadlinePassed(refused)
        now = time.monotonic()
        at = now + self.deadline_s if self.call_ends is None else self.call_ends
        if at <= now:
            self.cut = f"no answer within {self.deadline_s:g} s"
            raise DeadlinePassed(self.cut)
        return now, at

    def arm(self, conn: HTTPConnection) -> _Armed:
        with self.lock:
            _, at = self._ends_locked()
            armed = _Armed(self, conn, at, self.deadline_s)
            previous = self.armed.get(id(conn))
            if previous is not None:
                previous.active = False
            self.armed[id(conn)] = armed
        _WATCHDOG.arm(armed)
        return armed

    def resolve(self, host: str | bytes | None, *args: Any) -> list[AddressInfo]:
        """`getaddrinfo(host, *args)` within the current call's deadline (outside a call,
        `deadline_s`), or `DeadlinePassed`; `abort` ends the wait at once."""
        wake = threading.Event()

        def woken(_reason: str) -> None:
            wake.set()

        with self.lock:
            now, at = self._ends_locked()
            call, seconds = self.call, self.deadline_s
            self.also_abort.append(woken)
        try:
            found = resolve(host, *args, seconds=at - now, wake=wake)
        finally:
            with self.lock:
                self.also_abort.remove(woken)
        if found is not None:
            return found
        with self.lock:
            reason = self.aborted or f"{host_text(host)} did not resolve within {seconds:g} s"
            if call == self.call:  # (the watchdog cut its connection meanwhile: this says why)
                self.cut = reason
        raise DeadlinePassed(reason)

    def disarm(self, conn: HTTPConnection) -> None:
        with self.lock:
            armed = self.armed.pop(id(conn), None)
            if armed is not None:
                armed.active = False

    def abort(self, reason: str) -> None:
        with self.lock:
            self.aborted = reason
            armed = list(self.armed.values())
            others = list(self.also_abort)
        for one in armed:
            one.fire(reason)
        for other in others:
            other(reason)


class _DeadlineResolver(SystemResolver):
    """The system's resolver (urllib3's default), each lookup within the deadline."""

    def __init__(self, deadlines: _Deadlines) -> None:
        super().__init__()
        self._deadlines = deadlines

    def getaddrinfo(
        self,
        host: str | bytes | None,
        port: str | int | None,
        family: socket.AddressFamily,
        type: socket.SocketKind,  # (the name urllib3 passes it by)
        proto: int = 0,
        flags: int = 0,
        *,
        quic_upgrade_via_dns_rr: bool = False,
    ) -> list[AddressInfo]:
        return self._deadlines.resolve(host, port, family, type, proto, flags)


class _Bounded:
    """Mixed into a urllib3 connection: arms the deadline per request (a new connection's
    as it connects: the module's docstring says why), names it on failure."""

    _deadlines: _Deadlines
    _armed: _Armed | None = None
    _armed_connecting: _Armed | None = None
    """The deadline armed for connecting, which the request that follows keeps."""
    handshaking: socket.socket | None = None
    """While it connects, a duplicate of its socket: what the watchdog shuts (the TLS
    handshake runs on the socket's file, detached from the socket `sock` names)."""

    def connect(self) -> None:
        conn: Any = self  # (the urllib3 connection this is mixed into)
        armed = self._armed = self._armed_connecting = self._deadlines.arm(conn)
        timeout = conn.timeout
        left = armed.at - time.monotonic()
        if not isinstance(timeout, int | float) or timeout > left:  # (None, or urllib3's default)
            # a TCP connect has no socket to shut yet: its own timeout ends it
            conn.timeout = max(left, 0.001)
        lookup: DeadlinePassed | None = None
        try:
            super().connect()  # type: ignore[misc]
        except Exception as exc:
            if time.monotonic() >= armed.at:  # its timeout, what was left, ran out first
                armed.fire(f"no answer within {armed.seconds:g} s")
            if not self._cut():
                self._deadlines.disarm(self)  # type: ignore[arg-type]
                raise
            lookup = deadline_passed(exc)  # the name's lookup ran out: it says so
        else:
            if not self._cut():
                return
        finally:
            conn.timeout = timeout
            with self._deadlines.lock:
                copy, self.handshaking = self.handshaking, None
            if copy is not None:
                copy.close()
        raise lookup or self._late()

    def _new_conn(self) -> socket.socket:
        conn: Any = self
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        with self._deadlines.lock:  # as `_Armed.fire`: it shuts this socket, or it is cut
            if not self._cut():
                conn.sock = sock
                self.handshaking = sock.dup()
                return sock
        sock.close()
        raise self._late()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        armed, self._armed_connecting = self._armed_connecting, None
        self._armed = armed or self._deadlines.arm(self)  # type: ignore[arg-type]
        try:
            sent = super().request(*args, **kwargs)  # type: ignore[misc]
        except Exception:
            if not self._cut():
                raise
        else:
            if not self._cut():  # cut while connecting, before there was a socket to shut
                return sent
        raise self._late()

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if not self._cut():
                response = super().getresponse(*args, **kwargs)  # type: ignore[misc]
                if not self._cut():
                    return response
        except Exception:
            if not self._cut():
                raise
        finally:
            if self._armed is not None:
                self._armed.in_call = False
        raise self._late()  # outside the handler: not a "remote close" clickhouse-connect replays

    def close(self) -> None:
        self._armed_connecting = None
        self._deadlines.disarm(self)  # type: ignore[arg-type]
        super().close()  # type: ignore[misc]

    def _cut(self) -> bool:
        return self._armed is not None and self._armed.reason is not None

    def _late(self) -> DeadlinePassed:
        reason = self._armed.reason if self._armed is not None else None
        return DeadlinePassed(reason or "cut")


class Deadlines:
    """The deadlines of the requests of one urllib3 `PoolManager` (`bound`), for the calls
    of one client, one at a time: `call` gives a call its deadline and says afterwards
    whether a request of it was cut (`cut`)."""

    def __init__(self, deadline_s: float, name: str) -> None:
        self._shared = _Deadlines(deadline_s)
        self.name = name
        """What the requests reach (a redacted URL), for error messages."""

    @property
    def deadline_s(self) -> float:
        return self._shared.deadline_s

    @deadline_s.setter
    def deadline_s(self, seconds: float) -> None:
        self._shared.deadline_s = seconds

    @property
    def cut(self) -> str | None:
        """Why a request of the current (or last) call was cut, if one was."""
        return self._shared.aborted or self._shared.cut

    @contextlib.contextmanager
    def call(self, seconds: float | None = None) -> Iterator[None]:
        """One call of the client, all its requests within `seconds` (None: `deadline_s`)
        from now: each gets what the ones before it left (a call of several - a read and
        its clean-up, an insert and the column types it asks first, a client's opening -
        took that many deadlines when each had one of its own), and once one is cut the
        others fail at once."""
        before = self._shared.deadline_s
        with self._shared.lock:
            self._shared.call += 1
            self._shared.cut = None
            if seconds is not None:
                self._shared.deadline_s = seconds
            self._shared.call_ends = time.monotonic() + self._shared.deadline_s
        try:
            yield
        finally:
            with self._shared.lock:
                self._shared.deadline_s = before
                self._shared.call_ends = None

    def abort(self, reason: str = "abandoned: the process is stopping") -> None:
        """End every request under way now, and refuse every later one."""
        self._shared.abort(reason)

    @contextlib.contextmanager
    def aborting(self, abort: Callable[[str], None]) -> Iterator[None]:
        """Within the block, `abort()` also calls `abort(reason)`: a request outside the
        pool (`DeadlineClient.abort`) ends with the pool's. Aborted already: at once."""
        shared = self._shared
        with shared.lock:
            shared.also_abort.append(abort)
            aborted = shared.aborted
        try:
            if aborted is not None:
                abort(aborted)
            yield
        finally:
            with shared.lock:
                shared.also_abort.remove(abort)


def bound(manager: PoolManager, deadlines: Deadlines) -> PoolManager:
    """`manager` (a `PoolManager` or a `ProxyManager` with no pool yet), its requests
    from now on bounded by `deadlines`."""
    shared = deadlines._shared
    resolver = _DeadlineResolver(shared)

    class Connection(_Bounded, HTTPConnection):
        _deadlines = shared

    class SecureConnection(_Bounded, HTTPSConnection):
        _deadlines = shared

    class Disarming:
        """A pool that looks names up within the deadline and disarms a connection
        handed back with its answer read."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["resolver"] = resolver  # the manager's is urllib3's default, unbounded
            super().__init__(*args, **kwargs)

        def _put_conn(self, conn: Any) -> None:
            if conn is not None and getattr(conn, "is_idle", True):  # else its body is read yet
                shared.disarm(conn)
            super()._put_conn(conn)  # type: ignore[misc]

    class Pool(Disarming, HTTPConnectionPool):
        ConnectionCls = Connection

    class SecurePool(Disarming, HTTPSConnectionPool):
        ConnectionCls = SecureConnection

    manager.pool_classes_by_scheme = {"http": Pool, "https": SecurePool}
    manager.chainwatch_deadlines = deadlines  # type: ignore[attr-defined]
    return manager


def deadlines_of(client: object) -> Deadlines | None:
    """The `Deadlines` of a clickhouse-connect client's pool (None: chDB, or not `bound`)."""
    found = getattr(getattr(client, "http", None), "chainwatch_deadlines", None)
    return found if isinstance(found, Deadlines) else None
