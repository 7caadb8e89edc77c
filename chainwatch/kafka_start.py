"""Starting a kafka-python client (admin, producer, consumer) that leaves nothing behind
when Kafka is not there.

kafka-python's connect leaves the socket of each connect that fails unclosed:
`kafka/net/inet.py` makes it in `KafkaNetSocket.connect` and `create_connection` drops
it on `KafkaConnectionError` (refused) or a timeout, reachable from nowhere, so only
the collector closed it (a ResourceWarning, in CI a later test's). Importing this
module closes it (`chainwatch.kafka_connect_close`), for every kafka-python client of
the process, a client's reconnects included. And a client whose start fails keeps
what it made: the network client's selector (an epoll and a
socketpair) and, for a consumer or an admin client, the I/O thread it started before
bootstrapping. A process that tries again (a bench polling lag through a broker
outage) leaked all of it at every try. So the waiting is done on sockets of our own
(`kafka_watch.answers`, closed each time); only once a broker answers is the client
made, given the rest of the deadline, and a client whose start fails anyway (the
broker went in between) has its network client closed.

None of them asks Kafka to create a topic it asks about (`no_topic_creation`): the
producer and consumer are told so, and every network client is given what
kafka-python would otherwise drop.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
)

from chainwatch.kafka_connect_close import close_failed_connects
from chainwatch.kafka_watch import answers, tls_failed
from chainwatch.no_topic_creation import ALLOW_AUTO_CREATE, forward_topic_creation
from schemas.kafka_security import Kafka, endpoint
from sinks.backoff import Backoff

close_failed_connects()  # for every kafka-python client: ours are all made here


class TlsHandshakeFailed(KafkaTimeoutError):  # type: ignore[misc]  # kafka-python is untyped
    """No broker answered within the wait, and the last one reached failed the TLS
    handshake: "TLS handshake failed (<OpenSSL's reason>)" (a KafkaTimeoutError, as a
    broker that does not answer, to every caller that does not tell them apart)."""

    def __str__(self) -> str:  # the line itself, without kafka-python's class name
        return str(self.args[0])


def tls_failure(exc: ssl.SSLError) -> TlsHandshakeFailed:
    return TlsHandshakeFailed(tls_failed(exc))


CLOSED_IN_SASL = "the broker closed the connection during the SASL login"
"""What a refused login says when kafka-python saw the broker's close before its answer."""


def started(factory: Any, kafka: Kafka, *, start_ms: int, **configs: Any) -> Any:
    """`factory(**configs)` (`KafkaAdminClient`, `KafkaProducer`, `KafkaConsumer`) of
    `kafka` (its security arguments added), made once a broker there answers within
    `start_ms` (as kafka-python's own bootstrap wait), or kafka-python's error
    (`KafkaTimeoutError` when none did).

    Blocking: run it under `kafka_admin.bounded` (`kafka_admin.connected` does)."""
    target = endpoint(kafka)
    bootstrap = target.bootstrap
    configs = {**target.security.kafka_python_kwargs(), **configs}
    ssl_context = target.security.ssl_context
    deadline = time.monotonic() + start_ms / 1000
    pause = Backoff(initial_s=0.05, max_s=1.0)  # kafka-python's reconnect backoff
    addresses = [a.strip() for a in bootstrap.split(",") if a.strip()] or [bootstrap]
    tls_errors: list[ssl.SSLError] = []
    while True:
        reached, refused_tls = _answering(addresses, deadline, ssl_context, tls_errors)
        if reached is not None:
            break
        if refused_tls:  # a certificate or protocol no retry changes: said now
            raise tls_failure(tls_errors[-1])
        left = deadline - time.monotonic()
        if left <= 0:
            if tls_errors:
                raise tls_failure(tls_errors[-1])
            raise KafkaTimeoutError(f"no broker of {bootstrap} answered within {start_ms} ms")
        time.sleep(min(pause.next(), left))
    network_client = factory.DEFAULT_CONFIG["kafka_client"]
    if ALLOW_AUTO_CREATE in factory.DEFAULT_CONFIG:  # a producer's, a consumer's option
        configs = {ALLOW_AUTO_CREATE: False, **configs}
    made: list[Any] = []
    refusals: list[KafkaError] = []

    def client(**client_configs: Any) -> Any:
        made.append(network_client(**client_configs))
        forward_topic_creation(made[-1], client_configs)
        _note_authentication_failures(made[-1], refusals)
        return made[-1]

    try:
        return factory(
            bootstrap_servers=reached,  # not one that may not answer: it picks one at random
            bootstrap_timeout_ms=max(int((deadline - time.monotonic()) * 1000), 1),
            kafka_client=client,
            **configs,
        )
    except BaseException as exc:
        refused = _refusal(refusals) if isinstance(exc, KafkaTimeoutError) else None
        for each in made:
            each.close()  # its selector, its connections, its I/O thread
        if refused is not None:
            raise refused from None
        raise


def _refusal(refusals: list[KafkaError]) -> KafkaError | None:
    """The refusal to report: one with the broker's own reason, if one has it."""
    said = [r for r in refusals if CLOSED_IN_SASL not in str(r)]
    return (said or refusals or [None])[-1]


def _note_authentication_failures(network_client: Any, refusals: list[KafkaError]) -> None:
    """Note in `refusals` each connection of `network_client` that the broker refused to
    authenticate (a wrong SASL password, user or mechanism): kafka-python tries such a
    bootstrap again until its wait ends and then says only `KafkaTimeoutError`, which
    cannot tell a wrong password from a broker that does not answer.

    A refused login comes back as kafka-python's `SaslAuthenticationFailedError`, or, as
    often (the broker closes the connection right behind its answer, and kafka-python
    may see the close first), as the connection lost during the SASL exchange: both are
    noted, from the connection's `_sasl_authenticate`."""
    manager: Any = getattr(network_client, "_manager", None)
    get_connection = getattr(manager, "get_connection", None)
    if get_connection is None:  # another kafka-python: its plain timeout, as before
        return

    def noting(*args: Any, **kwargs: Any) -> Any:
        conn = get_connection(*args, **kwargs)
        authenticate = getattr(conn, "_sasl_authenticate", None)
        if authenticate is not None and not getattr(authenticate, "noted", False):

            async def authenticating(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await authenticate(*args, **kwargs)
                except SaslAuthenticationFailedError as exc:
                    refusals.append(exc)
                    raise
                except KafkaConnectionError:
                    refusals.append(SaslAuthenticationFailedError(CLOSED_IN_SASL))
                    raise

            authenticating.noted = True  # type: ignore[attr-defined]
            conn._sasl_authenticate = authenticating
        return conn

    manager.get_connection = noting


def _answering(
    addresses: list[str],
    deadline: float,
    ssl_context: Any = None,
    tls_errors: list[ssl.SSLError] | None = None,
) -> tuple[str | None, bool]:
    """The first of `addresses` whose broker answers before `deadline`, each given an even
    share of the time left: given all of it, a broker that accepts and never answers (hung,
    or black-holed) listed first took the whole bootstrap wait, and one of a cluster down
    kept every client (and the process waiting for Kafka) from starting. `tls_errors`:
    as `answers` keeps them.

    And whether every one of them, none answering, failed its TLS handshake for good
    (`settled_tls_failure`): the client's start says so at once instead of trying again
    until its wait ends (`kafka.request_timeout_s`, 15 s), which it did, while the
    probes said the same in a moment."""
    share = max((deadline - time.monotonic()) / len(addresses), 0.01)
    errors = tls_errors if tls_errors is not None else []
    settled = 0
    for address in addresses:
        before = len(errors)
        if answers(address, share, ssl_context=ssl_context, tls_errors=errors):
            return address, False
        if len(errors) == before + 1 and settled_tls_failure(errors[-1]):
            settled += 1
    return None, settled == len(addresses)


def settled_tls_failure(exc: ssl.SSLError) -> bool:
    """A TLS handshake failure that trying again cannot change: a certificate refused
    (the broker's by `ssl_cafile`, or the client's, or none, by the broker) or a peer that
    speaks no TLS. Not a connection closed mid-handshake (`SSLEOFError`, and the like): a
    broker stopping or overloaded closes them too."""
    return not isinstance(
        exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError | ssl.SSLWantReadError
    )
