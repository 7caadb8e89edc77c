"""An idempotent producer's start, with a deadline (the notifier's, the replay's).

`AIOKafkaProducer.start()` with `enable_idempotence` asks for a producer id and
retries that request in a loop without end (aiokafka's `Sender._maybe_wait_for_pid`):
a broker that answered the bootstrap and then stalls (frozen, overloaded, its
coordinator gone) kept the start, and the process, waiting for ever. Here the
start ends within `START_TIMEOUT_S` or is a `ProducerStartFailed` (a `SinkError`,
so the CLI prints one line, worded by what happened: no answer in time, no
connection, a refusal), with the producer stopped; a stop signal meanwhile
ends the wait at once. `stop_producer` bounds the stop as well.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from schemas.aiokafka_private import SENDER_STOP_S, drop_unsent, sender_task
from schemas.bounded_wait import ended_within
from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks.errors import SinkError

START_TIMEOUT_S = 30.0
"""How long a producer's start (bootstrap, then its producer id) may take: a broker that
answers does so in well under a second, a loaded one in a few."""

STOP_TIMEOUT_S = 10.0
"""How long `stop_producer` waits: a producer whose records were acknowledged stops at
once; one that still holds records Kafka does not take would retry them for ever."""


class ProducerStartFailed(SinkError):
    """A producer could not start: Kafka did not answer in time, or refused."""


async def start_producer(
    producer: AIOKafkaProducer,
    bootstrap: Kafka | str,
    *,
    stop: asyncio.Event | None = None,
    timeout_s: float | None = None,
) -> bool:
    """`producer.start()` within `timeout_s` (default `START_TIMEOUT_S`): True once started,
    False (the producer stopped) when `stop` is set first; else `ProducerStartFailed`."""
    limit = START_TIMEOUT_S if timeout_s is None else timeout_s
    starting = asyncio.ensure_future(_start_within(producer, limit))
    stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        await asyncio.wait(
            [starting] if stopped is None else [starting, stopped],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if starting.done():
            starting.result()
            return True
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await stop_producer(producer)
        return False
    except (KafkaError, OSError, TimeoutError) as exc:
        await stop_producer(producer)
        raise ProducerStartFailed(_start_failure(exc, bootstrap, limit)) from None
    except BaseException:  # our own task cancelled: no start left running behind it
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await stop_producer(producer)
        raise
    finally:
        if stopped is not None:
            stopped.cancel()


async def _start_within(producer: AIOKafkaProducer, limit: float) -> None:
    """`producer.start()` within `limit`: `schemas.deadline`, as Python 3.11's `wait_for`
    may drop a cancellation that arrives as the start finishes."""
    async with deadline(limit):
        await producer.start()


def _start_failure(exc: BaseException, bootstrap: Kafka | str, limit: float) -> str:
    """One line for a start that failed, worded by what happened: no answer within the
    deadline, no connection, or a refusal (these come at once, not after `limit`)."""
    detail = f"{type(exc).__name__}: {str(exc)[:200] or 'no detail'}"
    if isinstance(exc, TimeoutError | KafkaTimeoutError):
        return (
            f"Kafka at {bootstrap} did not let a producer start within {limit:g} s "
            f"({type(exc).__name__}: {str(exc)[:200] or 'no answer'}); check that the broker "
            "answers (`chainwatch kafka status` for the local one) and is not overloaded"
        )
    if isinstance(exc, OSError | KafkaConnectionError):
        return (
            f"could not connect to Kafka at {bootstrap} to start a producer ({detail}); "
            "check that the broker runs and listens there (`chainwatch kafka status` for "
            "the local one)"
        )
    return (
        f"Kafka at {bootstrap} refused a producer's start ({detail}); check the broker's "
        "log and settings"
    )


async def stop_producer(producer: AIOKafkaProducer, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """`producer.stop()` within `timeout_s`, its failure ignored: for a producer whose
    records were acknowledged (or whose failure the caller reports already).

    A stop cut short (past its deadline: records Kafka does not take; or cancelled)
    still ends the producer's sending and closes its client. aiokafka marks the
    producer closed as its `stop` begins and closes the client only once the records
    are flushed, so a cut stop left the sender retrying and the client's connections
    open for the life of the process, and was never run again."""
    try:
        async with deadline(timeout_s):
            await producer.stop()
    except asyncio.CancelledError:
        await _close_anyway(producer)
        raise
    except Exception:  # a stop past its deadline: TimeoutError
        await _close_anyway(producer)


async def _close_anyway(producer: AIOKafkaProducer) -> None:
    """What a cut `stop` left: the sender's task cancelled and waited for, the batches it
    still held cancelled (the records are lost, as the stop's deadline says; `drop_unsent`:
    the cut stop's own task waiting for them, aiokafka's accumulator close, was left
    pending for good, and asyncio logged "Task was destroyed but it is pending!" once
    the producer was collected), then the client closed."""
    with contextlib.suppress(Exception):  # a producer that never started has neither
        sender = sender_task(producer)
        if sender is not None and not sender.done():
            # waited for a while, never for ever (a cancel it swallowed), as the
            # gateway's `_abort_and_stop` waits for its sender
            await ended_within(sender, SENDER_STOP_S, cancel=True)
        drop_unsent(producer)
        await producer.client.close()
