"""An aiokafka client whose start is cut short closes the connection it bootstrapped with.

`AIOKafkaClient.bootstrap` (every consumer's and producer's `start`) opens a connection
to a bootstrap server, asks it for the cluster's metadata, then closes it or keeps it
among the client's own. A `CancelledError` while it waits for that answer (anything
but the Kafka errors and timeouts it catches) left that connection open and known to
no one: the client's `close` (`stop`) closes only its own. Starts are cut so whenever
something stops meanwhile: a revocation cancels the notifier's warm-up reading back
(sinks/webhooks/warmup.py), a stop signal ends a consumer's or a producer's start
(`sinks.consumer.start_consumer`, `sinks.producer_start.start_producer`), a deadline
ends a start Kafka is slow to answer. Each left a socket open for the life of the
process (until the garbage collector found it: "Unclosed AIOKafkaConnection", seen
as unraisable warnings of a loaded test suite), and the broker a connection.

`close_cut_bootstraps` wraps the method so that, when it raises, a connection it
opened and did not keep is closed, as aiokafka's own `connect` does when a start is
cut before it. aiokafka builds its clients inside its consumers' and producers'
constructors (faust's too), so like `chainwatch.no_topic_creation` this applies to
the whole process, applied by `chainwatch/__init__.py`. The connections a bootstrap
opens are noted through a context variable, read only while that bootstrap runs: the
client's metadata task, started at its end, inherits the variable but notes nothing.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from aiokafka import client as aiokafka_client
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import AIOKafkaConnection, create_conn


@dataclass
class _Opened:
    """The connections one bootstrap opened, noted while it runs."""

    conns: list[AIOKafkaConnection] = field(default_factory=list)
    running: bool = True


_opened: contextvars.ContextVar[_Opened | None] = contextvars.ContextVar(
    "chainwatch_kafka_bootstrap_opened", default=None
)

_aiokafka_bootstrap = AIOKafkaClient.bootstrap


async def _noted_create_conn(*args: Any, **kwargs: Any) -> AIOKafkaConnection:
    conn: AIOKafkaConnection = await create_conn(*args, **kwargs)
    opened = _opened.get()
    if opened is not None and opened.running:
        opened.conns.append(conn)
    return conn


async def _bootstrap(self: AIOKafkaClient) -> None:
    """`AIOKafkaClient.bootstrap`, closing the connection it leaves behind when it raises."""
    opened = _Opened()
    token = _opened.set(opened)
    try:
        await _aiokafka_bootstrap(self)
    except BaseException:
        kept = list(self._conns.values())
        for conn in opened.conns:
            if not any(conn is own for own in kept):
                conn.close()  # as aiokafka's `connect` does (its socket closes on the loop)
        raise
    finally:
        opened.running = False
        opened.conns.clear()
        _opened.reset(token)


def close_cut_bootstraps() -> None:
    """Make every aiokafka client of this process close the connection of a bootstrap cut
    short (idempotent; the module's docstring says why it is process-wide)."""
    aiokafka_client.create_conn = _noted_create_conn
    AIOKafkaClient.bootstrap = _bootstrap
