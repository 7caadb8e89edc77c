"""Readiness of the gateway, answered from a cache that a background task keeps fresh.

A probe (`/readyz`) never talks to Kafka itself: load balancers probe often,
and probes that each waited on the broker once queued ahead of ingest requests
and stretched a 503 from 5 s to 25 s. Instead one task checks every
`interval_s`, each check bounded by `deadline_s`, and every publish outcome
updates the answer too (a failure of Kafka's marks the gateway not ready at once,
a commit ready; a request refused for its own time, cut by a stop, refused one
topic by Kafka's authorization, or failed by a fault of the gateway's own says
nothing of Kafka's reachability and changes nothing: a gateway pulled for one
topic's missing ACL would serve no topic at all).
A probe therefore costs nothing and answers at once; the answer is at most
`interval_s + deadline_s` old.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from schemas.deadline import cancel_requests, cancelled_since, deadline

log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReadinessState:
    ready: bool
    age_s: float | None
    """Seconds since the answer was last confirmed (None: not checked yet)."""
    error: str | None = None


class Readiness:
    def __init__(
        self, check: Callable[[], Awaitable[bool]], *, interval_s: float, deadline_s: float
    ) -> None:
        self._check = check
        self.interval_s = interval_s
        self.deadline_s = deadline_s
        self._ready = False
        self._error: str | None = "not checked yet"
        self._at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._begun = 0
        """Checks begun (each `check_once` numbered by it)."""
        self._stale_below = 0
        """A check numbered below this ends unheard: one begun later has answered, or a
        publish's outcome was noted since it began."""

    def state(self) -> ReadinessState:
        age = None if self._at is None else round(time.monotonic() - self._at, 3)
        return ReadinessState(self._ready, age, self._error)

    def note(self, ready: bool, error: str | None = None) -> None:
        """Record a publish's outcome: newer than any check under way."""
        self._stale_below = self._begun + 1
        self._set(ready, error)

    def _set(self, ready: bool, error: str | None) -> None:
        if ready and not self._ready:
            log.info("readiness changed", ready=True)
        elif self._ready and not ready:  # the gateway now answers 503: Kafka is gone
            log.warning("readiness changed", ready=False, error=error)
        self._ready, self._error, self._at = ready, error, time.monotonic()

    async def check_once(self) -> None:
        # `schemas.deadline`, not `wait_for`: on Python 3.11 `wait_for` returns the
        # check's result when a cancel arrives as the check ends, and the cancel is
        # lost; the task then slept on, and a gateway's shutdown waited for it forever
        # (seen once in CI: "the gateway did not stop within 60 s"). Not a bare
        # `asyncio.timeout` either: the check's aiokafka calls may swallow the cancel.
        self._begun += 1
        number = self._begun
        try:
            async with deadline(self.deadline_s):
                ok = await self._check()
        except TimeoutError:
            outcome: tuple[bool, str | None] = (False, f"no answer within {self.deadline_s} s")
        except Exception as exc:  # any failure means "not ready", never a crash
            outcome = (False, f"{type(exc).__name__}: {exc}")
        else:
            outcome = (ok, None if ok else "Kafka does not answer")
        # checks overlap (the start's first one and the one after the producer's warm-up):
        # the first one, slow on a loaded machine, ended after the newer one had said
        # ready, and /readyz said "unreachable" of a Kafka that had just answered
        if number < self._stale_below:
            return
        self._stale_below = number + 1
        self._set(*outcome)

    async def start(self) -> None:
        """Check once (bounded), then keep checking in the background."""
        await self.check_once()
        self._task = asyncio.create_task(self._run(), name="gateway-readiness")

    async def stop(self) -> None:
        """End the background task; a cancel of our caller meanwhile is handed on (the
        task's own `CancelledError`, suppressed here, would take it along)."""
        if self._task is None:
            return
        baseline = cancel_requests()
        self._task.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._task = None
        if cancelled_since(baseline):
            raise asyncio.CancelledError

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)  # a polling period, not a synchronisation
            # a cancel that a library call inside the check swallowed still stops us:
            # `check_once` runs under `schemas.deadline`, which raises it again
            await self.check_once()


class TopicPreparation(Protocol):
    """The contract's topics, still being prepared while the gateway serves.

    The gateway serves at once (`/healthz` alive, `/readyz` 503) and prepares its
    topics in the background, however long Kafka takes to answer: publishing
    before they exist would let a broker's auto-creation make them with the
    wrong partition count, so a publish waits for them as it waits for a slow
    Kafka, and is a 503 with `Retry-After` when they are not there within its
    deadline, as while Kafka is gone. The composition root provides it
    (creating topics is an admin call of its Kafka tooling).
    """

    def waiting_for(self) -> str | None:
        """What the gateway waits for ("Kafka at <bootstrap>"), None once prepared."""
        ...

    async def prepared(self) -> None:
        """Return once the topics are prepared."""
        ...

    async def run(self) -> None:
        """Prepare the topics, trying again until they are (cancelled at shutdown)."""
        ...
