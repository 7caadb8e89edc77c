"""Whether Kafka answers, checked in the background: a running process's readiness.

The worker, the sink and the notifier are ready once they have reached Kafka and
started; before this, nothing told their `/readyz` (or `chainwatch_worker_ready`)
that Kafka went away later, so a probe and the dashboards stayed green through a
broker outage while nothing flowed (only the gateway, which answers clients,
turned 503). A `KafkaWatch` asks a bootstrap broker for its API versions every
`interval_s` from a thread of its own, each request bounded by `timeout_s`, and
says what is wrong, if anything; the probes read that answer and never wait on
Kafka. The request is Kafka's smallest, sent on a plain socket: a client library
would log four lines of refused connections at every check of an outage.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from chainwatch.logs import get_logger
from schemas.kafka_security import tls_reason

log = get_logger(__name__)

INTERVAL_S = 5.0
TIMEOUT_S = 3.0


class KafkaWatch:
    def __init__(
        self,
        bootstrap: str,
        *,
        interval_s: float = INTERVAL_S,
        timeout_s: float = TIMEOUT_S,
        probe: Callable[[], bool] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.ssl_context = ssl_context
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._probe = probe or self._metadata
        self._down_since: datetime | None = None
        """When the first failed check of the outage began (UTC, said by `problem`)."""
        self._down_began: float | None = None
        """The same moment on the monotonic clock: `down_s` is counted from it, not from
        when that check gave up (up to `timeout_s` a bootstrap broker later), and a wall
        clock stepped meanwhile does not stretch or shrink it."""
        self._tls_failure: str | None = None
        """"TLS handshake failed (<reason>)" when the last check failed so: an expired or
        replaced certificate is not a broker that does not answer."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _metadata(self) -> bool:
        tls_errors: list[ssl.SSLError] = []
        ok = answers(
            self.bootstrap, self.timeout_s, ssl_context=self.ssl_context, tls_errors=tls_errors
        )
        self._tls_failure = None if ok or not tls_errors else tls_failed(tls_errors[-1])
        return ok

    def problem(self) -> str | None:
        """Why the process is not ready for Kafka's sake, None when the last check passed."""
        since, tls = self._down_since, self._tls_failure
        if since is None:
            return None
        what = "does not answer" if tls is None else f"answers, but: {tls}"
        return f"Kafka at {self.bootstrap} {what} (since {since:%Y-%m-%dT%H:%M:%SZ})"

    def check(self) -> None:
        """One check (the thread's step), logging a change either way."""
        began, began_at = time.monotonic(), datetime.now(UTC)
        try:
            ok = self._probe()
        except Exception:  # a probe that fails is an answer: not reachable
            ok = False
        if not ok and self._down_began is None:
            self._down_since, self._down_began = began_at, began
            log.warning(
                "kafka_not_answering",
                bootstrap=self.bootstrap,
                ready=False,
                **({} if self._tls_failure is None else {"reason": self._tls_failure}),
            )
        elif ok and self._down_began is not None:
            down_s = time.monotonic() - self._down_began
            self._down_since = self._down_began = None
            log.info("kafka_answering_again", bootstrap=self.bootstrap, down_s=round(down_s, 1))

    def start(self) -> KafkaWatch:
        """Check every `interval_s` from now on (the process has just reached Kafka)."""

        def run() -> None:
            while not self._stop.wait(self.interval_s):
                self.check()

        self._thread = threading.Thread(target=run, name="kafka-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


TLS_HANDSHAKE_FAILED = "TLS handshake failed"


def tls_failed(exc: ssl.SSLError) -> str:
    """OpenSSL's reason without its code and source line: "certificate verify failed:
    self-signed certificate" (the broker's certificate is not trusted), and from a
    Kafka broker that requires a client certificate, "sslv3 alert bad certificate" (none
    was sent) or "sslv3 alert certificate unknown" (its CA did not issue the one sent)."""
    return f"{TLS_HANDSHAKE_FAILED} ({tls_reason(exc) or type(exc).__name__})"


_API_VERSIONS_V0 = struct.pack(">hhih", 18, 0, 1, 10) + b"chainwatch"
"""ApiVersions v0 request header: api_key 18, version 0, correlation id 1, client id."""


def answers(
    bootstrap: str,
    timeout_s: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
    tls_errors: list[ssl.SSLError] | None = None,
) -> bool:
    """True when a broker of `bootstrap` (host:port[,host:port...]) answers an
    ApiVersions request within `timeout_s`; over TLS with `ssl_context` (an SSL or
    SASL_SSL listener; a SASL listener answers ApiVersions before authentication).

    `tls_errors` keeps why the last broker that was reached failed the TLS handshake
    (an untrusted certificate of its; no client certificate, or one it does not trust,
    where it requires one): appended to at each such failure, emptied when a broker
    refuses the connection or closes it outside TLS (a broker that does not answer in
    time leaves it as it is)."""
    request = struct.pack(">i", len(_API_VERSIONS_V0)) + _API_VERSIONS_V0
    for address in bootstrap.split(","):
        host, port = _host_port(address.strip())
        try:
            with contextlib.ExitStack() as stack:
                conn = stack.enter_context(socket.create_connection((host, port), timeout_s))
                if ssl_context is not None:
                    conn = stack.enter_context(ssl_context.wrap_socket(conn, server_hostname=host))
                conn.settimeout(timeout_s)
                conn.sendall(request)
                head = b""
                while len(head) < 8:
                    chunk = conn.recv(8 - len(head))
                    if not chunk:
                        break
                    head += chunk
            if len(head) == 8 and struct.unpack(">ii", head)[1] == 1:
                return True
        except ssl.SSLError as exc:
            if tls_errors is not None:
                tls_errors.append(exc)
        except TimeoutError:
            continue
        except (OSError, ValueError):
            if tls_errors is not None:
                tls_errors.clear()
    return False


def _host_port(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, or a bare host on Kafka's default port 9092 (as the
    clients take it: without the default the watch said "does not answer" for good)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 9092
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:  # no port, or a bare IPv6 address
        return address, 9092
    return host, int(port)
