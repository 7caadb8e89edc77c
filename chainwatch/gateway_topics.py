"""The gateway's topics, prepared in the background while it already serves.

The worker, the sink and the notifier wait for Kafka when they start before it;
the gateway exited 1 instead, so a supervisor restarted it with a growing delay
(Kubernetes' crash-loop back-off reaches five minutes) and it could stay down
that long after Kafka came back; and before it listened it waited for the
first topic request (up to ~15 s without Kafka). Now it serves at once, not
ready: `/healthz` alive and saying what it waits for, `/readyz` 503, a valid
post waiting for the topics within its publish deadline, else 503 with
`Retry-After` (nothing is published before the topics exist: a broker that
auto-creates topics would make them with its own partition count), while this
task prepares the topics, trying again 1 s doubling to 30 s after a failed
attempt, each attempt bounded, until it succeeds (well under a second with
Kafka up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar, cast

from chainwatch.kafka_admin import KafkaRefused, KafkaUnreachable
from chainwatch.logs import get_logger, silenced
from sinks.backoff import Backoff

log = get_logger(__name__)

T = TypeVar("T")

ATTEMPT_DEADLINE_S = 120.0
"""At most this long per attempt: the admin calls have their own timeouts, this bounds
a client stuck beyond them (its daemon thread is left behind, as `kafka_admin.bounded`)."""


class TopicsInBackground:
    """`streams.ingest.readiness.TopicPreparation` by the project's Kafka admin tooling."""

    def __init__(
        self,
        prepare: Callable[[], None],
        bootstrap: str,
        *,
        backoff: Backoff | None = None,
        attempt_deadline_s: float = ATTEMPT_DEADLINE_S,
    ) -> None:
        self._prepare = prepare
        self._waiting: str | None = f"Kafka at {bootstrap}"
        self._backoff = backoff or Backoff(initial_s=1.0, max_s=30.0)
        self._deadline_s = attempt_deadline_s
        self._prepared = asyncio.Event()

    def waiting_for(self) -> str | None:
        return self._waiting

    async def prepared(self) -> None:
        await self._prepared.wait()

    async def run(self) -> None:
        backoff = self._backoff
        while True:
            try:
                async with asyncio.timeout(self._deadline_s):
                    await _off_loop(self._quiet_prepare)
            except Exception as exc:  # any failure: not prepared yet, said and tried again
                delay = backoff.next()
                if isinstance(exc, KafkaRefused):
                    # The worker exits 1 on it; the gateway stays not ready and tries at
                    # the longest pause (an operator may fix the ACL or setting meanwhile).
                    delay, level, event = backoff.max_s, logging.ERROR, "kafka.topics_refused"
                elif isinstance(exc, KafkaUnreachable | TimeoutError):
                    level, event = logging.WARNING, "kafka.unreachable"
                else:
                    level, event = logging.WARNING, "kafka.topics_not_prepared"
                log.log(
                    level,
                    event,
                    process="gateway",
                    attempt=backoff.attempts,
                    retry_in_s=round(delay, 1),
                    error=str(exc) or f"no answer within {self._deadline_s:g} s",
                )
                await asyncio.sleep(delay)
                continue
            log.info("kafka.topics_prepared", process="gateway", attempts=backoff.attempts + 1)
            self._waiting = None
            self._prepared.set()
            return

    def _quiet_prepare(self) -> None:
        with silenced("kafka"):  # our line per attempt, not kafka-python's connection errors
            self._prepare()


async def _off_loop(call: Callable[[], T]) -> T:
    """`call()` on a daemon thread: a blocking admin call must neither hold the event loop
    nor, left running at shutdown, keep the process alive (an executor's thread would)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, failure: BaseException | None) -> None:
        if done.done():  # cancelled meanwhile (the attempt's deadline, a shutdown)
            return
        if failure is not None:
            done.set_exception(failure)
        else:
            done.set_result(cast(T, result))

    def run() -> None:
        result: T | None = None
        failure: BaseException | None = None
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting task
            failure = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, result, failure)

    threading.Thread(target=run, name="gateway-topics", daemon=True).start()
    return await done
