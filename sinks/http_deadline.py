"""A synchronous httpx client whose every request has one wall-clock deadline.

httpx's timeouts bound one socket operation: a server that accepts and then
sends a byte a second (or a header line that never ends) holds a request for
ever, each read succeeding within its timeout. `DeadlineClient` keeps httpx
(URLs, pooling, the exceptions) but builds its connection pool on a network
backend whose connects, reads and writes wait at most until the deadline of the
request in flight: `deadline_s` from the moment it is sent, connecting, sending,
the headers and the body together, and the host name's lookup before them
(`sinks.name_lookup`: `getaddrinfo` has no timeout, and a resolver that did not
answer held the request past its deadline, for ever if it hung). Past it the
request fails with `httpx.ReadTimeout` (or `ConnectTimeout`/`WriteTimeout`)
saying so, and the connection is dropped. A request may carry its own deadline with
`extensions={"deadline_s": seconds}`.

One client serves one thread at a time (the deadline is the client's, not the
request's), as the local tools that use it do. `abort` (from any other thread) ends
its request under way at once and fails every later one: a process told to stop
does not wait for a server that trickles, nor for one that stalls a TLS handshake, nor
for a name's lookup (a TCP connect under way still ends by its own deadline: there is
no socket to shut down yet).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from schemas.kafka_security import tls_reason
from sinks.name_lookup import is_address, resolve


class _Deadline:
    def __init__(self) -> None:
        self.at: float | None = None
        self.seconds: float = 0.0
        self.aborted: str | None = None
        self.lock = threading.Lock()
        self.streams: set[_DeadlineStream] = set()
        """The connections open now: what `abort` shuts down."""
        self.lookups: set[threading.Event] = set()
        """What wakes the lookups under way: `abort` sets them."""

    def left(self, timeout: float | None, late: type[Exception]) -> float | None:
        """`timeout`, shortened to what is left of the deadline; `late` once it passed
        (or the client was aborted)."""
        self.check_aborted(late)
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise late(f"no answer within {self.seconds:g} s")
        return left if timeout is None else min(timeout, left)

    def addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The addresses `host` resolves to, each once in the resolver's order, within
        what is left of the deadline (and `timeout`): `ConnectTimeout` past it."""
        if is_address(host):
            return [host]
        left = self.left(timeout, httpcore.ConnectTimeout)
        wake = threading.Event()
        with self.lock:
            self.lookups.add(wake)
        try:
            self.check_aborted(httpcore.ConnectTimeout)  # (aborted before it was added)
            found = resolve(host, port, 0, socket.SOCK_STREAM, seconds=left, wake=wake)
        finally:
            with self.lock:
                self.lookups.discard(wake)
        if found is None:
            self.check_aborted(httpcore.ConnectTimeout)
            limit = self.seconds if timeout is None or self.seconds <= timeout else timeout
            raise httpcore.ConnectTimeout(f"{host} did not resolve within {limit:g} s")
        return list(dict.fromkeys(str(entry[4][0]) for entry in found))

    def check_aborted(self, late: type[Exception]) -> None:
        """`late` if the client was aborted: what a read or write ended with then is the
        shutdown's (an EOF, a broken pipe), not the server's."""
        if self.aborted is not None:
            raise late(self.aborted)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline
        self._handshake: socket.socket | None = None
        """During `start_tls`, a duplicate of the socket TLS takes over (and detaches)."""
        with deadline.lock:
            deadline.streams.add(self)
        if deadline.aborted is not None:  # aborted while it connected
            self.shut()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        left = self._deadline.left(timeout, httpcore.ReadTimeout)
        try:
            data = self._inner.read(max_bytes, left)
        except httpcore.ReadTimeout:
            self._deadline.left(None, httpcore.ReadTimeout)  # the deadline's, if it is
            raise
        except httpcore.NetworkError:
            self._deadline.check_aborted(httpcore.ReadTimeout)
            raise
        self._deadline.check_aborted(httpcore.ReadTimeout)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        left = self._deadline.left(timeout, httpcore.WriteTimeout)
        try:
            self._inner.write(buffer, left)
        except httpcore.WriteTimeout:
            self._deadline.left(None, httpcore.WriteTimeout)
            raise
        except httpcore.NetworkError:
            self._deadline.check_aborted(httpcore.WriteTimeout)
            raise

    def close(self) -> None:
        with self._deadline.lock:
            self._deadline.streams.discard(self)
        self._inner.close()

    def shut(self) -> None:
        """End a read or write blocked on the connection now (from another thread)."""
        with self._deadline.lock:  # not while `start_tls` closes its duplicate
            sock = self._handshake or self._inner.get_extra_info("socket")
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):  # the socket's own, not TLS's close_notify
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = self._deadline.left(timeout, httpcore.ConnectTimeout)
        sock = self._inner.get_extra_info("socket")
        with self._deadline.lock:  # the handshake runs on a socket `shut` cannot reach
            self._handshake = sock.dup() if isinstance(sock, socket.socket) else None
        try:
            if self._deadline.aborted is not None:  # aborted before the duplicate was made
                self.shut()
            inner = self._inner.start_tls(ssl_context, server_hostname, left)
        except httpcore.NetworkError:
            self._deadline.check_aborted(httpcore.ConnectTimeout)
            raise
        finally:
            with self._deadline.lock:
                if self._handshake is not None:
                    self._handshake.close()
                self._handshake = None
        with self._deadline.lock:  # the TLS stream takes this one's place
            self._deadline.streams.discard(self)
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: _Deadline) -> None:
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in self._deadline.addresses(host, port, timeout):  # TLS still names `host`
            left = self._deadline.left(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    timeout=left,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # the next address, as `socket.create_connection` does
                continue
            return _DeadlineStream(stream, self._deadline)
        raise failure or httpcore.ConnectError(f"{host} resolved to no address")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = self._deadline.left(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_unix_socket(path, timeout=left, socket_options=socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=_DeadlineBackend(deadline),
        )


class DeadlineClient(httpx.Client):
    """`httpx.Client` whose requests each end within `deadline_s` (see the module)."""

    def __init__(self, *, deadline_s: float, **kwargs: Any) -> None:
        self._deadline = _Deadline()
        self.deadline_s = deadline_s
        super().__init__(transport=_DeadlineTransport(self._deadline), **kwargs)

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        seconds = float(request.extensions.get("deadline_s", self.deadline_s))
        self._deadline.seconds = seconds
        self._deadline.at = time.monotonic() + seconds
        return super().send(request, **kwargs)

    def abort(self, reason: str) -> None:
        """End the request under way now (it fails with `reason`), and every later one
        before it is sent. Thread-safe: the request runs on another thread."""
        with self._deadline.lock:
            self._deadline.aborted = reason
            streams = list(self._deadline.streams)
            lookups = list(self._deadline.lookups)
        for stream in streams:
            stream.shut()
        for lookup in lookups:
            lookup.set()


def failure_reason(exc: httpx.HTTPError, limit: int = 120) -> str:
    """`ReadTimeout: no answer within 10 s`: why a request failed, as one printable line.

    What a garbage answer sent ends up in httpx's messages and is no use in an
    error or log line: a protocol or decoding error says "no valid HTTP answer". A
    connection whose TLS handshake failed says `TLS handshake failed (<OpenSSL's
    reason>)`: OpenSSL's `wrong version number` alone (a server that speaks plain HTTP,
    given an https URL) named neither TLS nor the URL's scheme.
    """
    handshake = _tls_error(exc) if isinstance(exc, httpx.ConnectError) else None
    if handshake is not None:
        why = tls_reason(handshake)[:limit] or type(handshake).__name__
        if "WRONG_VERSION_NUMBER" in str(handshake):
            why += PLAIN_HTTP_HINT
        reason = f"{TLS_HANDSHAKE_FAILED} ({why})"
    elif isinstance(exc, httpx.ProtocolError | httpx.DecodingError):
        reason = "no valid HTTP answer"
    else:
        line = re.sub(r"[^\x20-\x7e]", "?", " ".join(str(exc).split()))
        reason = (line if len(line) <= limit else line[: limit - 1] + "\u2026") or "no detail"
    return f"{type(exc).__name__}: {reason}"


TLS_HANDSHAKE_FAILED = "TLS handshake failed"
PLAIN_HTTP_HINT = ": a plain HTTP server? then an http:// URL"
"""OpenSSL's `wrong version number`: the answer to its hello was no TLS."""


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The `ssl.SSLError` a failed connection was raised from (httpx's `ConnectError`
    from httpcore's, from OpenSSL's), if it was one."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
