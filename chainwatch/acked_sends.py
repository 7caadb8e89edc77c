"""Records sent through an idempotent producer, each call within a deadline.

`chainwatch import --to kafka` and `chainwatch replay` publish a file's records
the same way: each `send` (Kafka taking the record into the producer's buffer)
and each `flush` (Kafka acknowledging every record sent so far) has a deadline,
since aiokafka's idempotent producer retries a batch for as long as Kafka is
away (a broker stopped mid-publish kept a replay waiting for ever, silent).
Past the deadline, or when Kafka refuses, the caller's own one-line error is
raised, given the count of records acknowledged before.

The deadlines are `schemas.deadline`s, not `wait_for`: Python 3.11's `wait_for`
returns the result of a call that finished in the turn it was cancelled and
drops the cancellation, so a Ctrl-C as a send finished was ignored; a bare
`asyncio.timeout` lets aiokafka swallow it instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from schemas.deadline import deadline


def kafka_failed(exc: BaseException, timeout_s: float) -> str:
    """How Kafka failed a send or flush, for the caller's one line: it did not answer
    within the deadline; it stopped answering (a broker gone); or it refused.

    A broker stopped mid-publish does not always show as the deadline: aiokafka gives
    up on a batch whose partition has no leader once it expires and fails it with a
    retriable error (`LeaderNotAvailableError`, `NotLeaderForPartitionError`, or
    `KafkaConnectionError`, `KafkaTimeoutError`), which read "Kafka refused the records"
    though nothing answered. Only an error trying again cannot change is a refusal;
    only the deadline may say "within N s" (a retriable error may come at once)."""
    if isinstance(exc, TimeoutError):
        return f"did not answer within {timeout_s:g} s"
    if getattr(exc, "retriable", False) is True or isinstance(exc, KafkaTimeoutError):
        return f"stopped answering ({type(exc).__name__})"
    return f"refused the records ({type(exc).__name__})"


class AckedSends:
    """Sends and their acknowledgements, each within `timeout_s`; words its failures by
    `_failed`, which a subclass defines (the import's and the replay's own lines)."""

    def __init__(self, timeout_s: float, producer: AIOKafkaProducer | None = None) -> None:
        self.timeout_s = timeout_s
        self.acknowledged = 0
        """Records Kafka acknowledged (counted at each `flush`)."""
        self._producer = producer
        self._pending: list[asyncio.Future[Any]] = []

    @property
    def pending(self) -> int:
        """Records sent and not yet acknowledged."""
        return len(self._pending)

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Queue one record; `MessageSizeTooLargeError` for one Kafka would never take."""
        assert self._producer is not None, "start the producer first"
        try:
            async with deadline(self.timeout_s):
                future = await self._producer.send(topic, key=key, value=value)
        except MessageSizeTooLargeError:
            raise
        except (KafkaError, TimeoutError) as exc:
            raise self._failed(exc) from None
        self._pending.append(future)

    async def flush(self) -> None:
        """Wait until Kafka acknowledged every queued record (or fail with a count)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            async with deadline(self.timeout_s):
                await asyncio.gather(*pending)
        except (KafkaError, TimeoutError) as exc:
            raise self._failed(exc) from None
        self.acknowledged += len(pending)

    def _failed(self, exc: BaseException) -> Exception:
        """The error that stops the caller, worded by `kafka_failed`."""
        raise NotImplementedError
