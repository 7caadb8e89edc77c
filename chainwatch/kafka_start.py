"""Starting a kafka-python client (admin, producer, consumer) that leaves nothing behind
when Kafka is not there.

kafka-python's connect leaves the socket of each connect that fails unclosed:
`kafka/net/inet.py` makes it in `KafkaNetSocket.connect` and `create_connection` drops
it on `KafkaConnectionError` (refused) or a timeout, reachable from nowhere, so only
the collector closes it (a ResourceWarning, in CI a later test's). And a client whose
start fails keeps what it made: the network client's selector (an epoll and a
socketpair) and, for a consumer or an admin client, the I/O thread it started before
bootstrapping. A process that tries again (a bench polling lag through a broker
outage) leaked all of it at every try. So the waiting is done on sockets of our own
(`kafka_watch.answers`, closed each time); only once a broker answers is the client
made, given the rest of the deadline, and a client whose start fails anyway (the
broker went in between; only then can kafka-python's connect leave a socket) has its
network client closed.

None of them asks Kafka to create a topic it asks about (`no_topic_creation`): the
producer and consumer are told so, and every network client is given what
kafka-python would otherwise drop.
"""

from __future__ import annotations

import time
from typing import Any

from kafka.errors import KafkaTimeoutError

from chainwatch.kafka_watch import answers
from chainwatch.no_topic_creation import ALLOW_AUTO_CREATE, forward_topic_creation
from sinks.backoff import Backoff


def started(factory: Any, bootstrap: str, *, start_ms: int, **configs: Any) -> Any:
    """`factory(**configs)` (`KafkaAdminClient`, `KafkaProducer`, `KafkaConsumer`) of
    `bootstrap`, made once a broker there answers within `start_ms` (as kafka-python's
    own bootstrap wait), or kafka-python's error (`KafkaTimeoutError` when none did).

    Blocking: run it under `kafka_admin.bounded` (`kafka_admin.connected` does)."""
    deadline = time.monotonic() + start_ms / 1000
    pause = Backoff(initial_s=0.05, max_s=1.0)  # kafka-python's reconnect backoff
    addresses = [a.strip() for a in bootstrap.split(",") if a.strip()] or [bootstrap]
    while (reached := _answering(addresses, deadline)) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise KafkaTimeoutError(f"no broker of {bootstrap} answered within {start_ms} ms")
        time.sleep(min(pause.next(), left))
    network_client = factory.DEFAULT_CONFIG["kafka_client"]
    if ALLOW_AUTO_CREATE in factory.DEFAULT_CONFIG:  # a producer's, a consumer's option
        configs = {ALLOW_AUTO_CREATE: False, **configs}
    made: list[Any] = []

    def client(**client_configs: Any) -> Any:
        made.append(network_client(**client_configs))
        forward_topic_creation(made[-1], client_configs)
        return made[-1]

    try:
        return factory(
            bootstrap_servers=reached,  # not one that may not answer: it picks one at random
            bootstrap_timeout_ms=max(int((deadline - time.monotonic()) * 1000), 1),
            kafka_client=client,
            **configs,
        )
    except BaseException:
        for each in made:
            each.close()  # its selector, its connections, its I/O thread
        raise


def _answering(addresses: list[str], deadline: float) -> str | None:
    """The first of `addresses` whose broker answers before `deadline`, each given an even
    share of the time left: given all of it, a broker that accepts and never answers (hung,
    or black-holed) listed first took the whole bootstrap wait, and one of a cluster down
    kept every client (and the process waiting for Kafka) from starting."""
    share = max((deadline - time.monotonic()) / len(addresses), 0.01)
    return next((a for a in addresses if answers(a, share)), None)
