"""The notifier's copy of the silences: the whole `webhook-silences` topic, followed.

Each notifier process reads every partition of the topic from its beginning with a
consumer of no group (it commits nothing), then follows it, so any number of notifiers
see the same silences without a restart (silences.py). It reads in rounds: a round asks
the topic's end offsets, then reads up to them; `synced_at` is when the last complete
round began. A delivery waits (`current_since`) until a round begun after its record was
read from `alerts` is complete (before a retry: a round begun after the retry was due):
a silence written before the alert was read is then known, and a notifier that has not
read the topic to its end since it started delivers nothing (a restart does not page a
silenced alert).

Rounds run when a delivery waits for one, else every `IDLE_S` (one ListOffsets request).
Between rounds the reader is paused, so no fetch of it waits at the broker (held up to
`FETCH_MAX_WAIT_MS` when the topic has nothing new) ahead of the next round's ListOffsets
on the connection: a round asked for starts at once.
Each Kafka call has a deadline; a round that fails (Kafka gone, the topic unreadable) is
logged (`webhook_silences_unreadable`), makes the notifier not ready (`problem`) and is
retried with a backoff on a new reader: the deliveries wait, none is made on a guess.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks.backoff import Backoff
from sinks.consumer import new_consumer, stop_consumer
from sinks.webhooks.silences import SilenceBook, silence_of_record

log = structlog.stdlib.get_logger(__name__)

IDLE_S = 1.0
"""A round at least this often with no delivery waiting (a quiet notifier's readiness)."""
POLL_MS = 200
FETCH_MAX_WAIT_MS = 100
"""The most the broker holds the reader's fetch when the topic has nothing new (aiokafka's
default 500 ms): the reader is paused between rounds, so a round waits at most for one
fetch begun in the round before it."""

T = TypeVar("T")


class SilencesUnreadable(Exception):
    """A round of reading the silences topic failed (its reason in the message)."""


class SilenceFollower:
    """The silences of `topic` (partitions 0..`partitions`-1), kept current in `book`."""

    def __init__(self, bootstrap: Kafka, topic: str, partitions: int, *, call_s: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.call_s = call_s
        self.book = SilenceBook()
        self.synced_at = float("-inf")
        """`time.monotonic()` at which the last complete round began."""
        self.rounds = 0
        self._problem: str | None = f"silences topic {topic} not read yet"
        self._wanted = asyncio.Event()
        self._synced = asyncio.Event()
        self.skipped = 0
        """Records of the topic that are no silence (logged, not kept)."""

    def problem(self) -> str | None:
        """Why deliveries wait for the silences (readiness), None when they are current."""
        return self._problem

    async def current_since(self, since: float, *, cancel: list[asyncio.Event]) -> bool:
        """Wait until a round begun at or after `since` (monotonic) is complete: True; False
        as soon as one of `cancel` is set."""
        while self.synced_at < since:
            if any(e.is_set() for e in cancel):
                return False
            self._wanted.set()
            synced = self._synced
            waits = [asyncio.ensure_future(e.wait()) for e in (synced, *cancel)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the topic until `stop`; a failure is retried on a new reader. Any error
        is (a bug of ours or of the client included): the deliveries wait meanwhile, and
        the notifier says why it is not ready, never a follower gone while they wait."""
        backoff = Backoff(0.5, 10.0)
        while not stop.is_set():
            try:
                await self._follow(stop, backoff)
            except Exception as exc:
                expected = isinstance(exc, SilencesUnreadable)
                self._problem = (
                    str(exc) if expected else f"reading silences topic {self.topic}: {exc!r}"
                )
                log.warning(
                    "webhook_silences_unreadable",
                    topic=self.topic,
                    error=self._problem,
                    exc_info=not expected,
                )
                delay = backoff.next()
                try:
                    async with asyncio.timeout(delay):
                        await stop.wait()
                except TimeoutError:
                    pass

    async def _follow(self, stop: asyncio.Event, backoff: Backoff) -> None:
        consumer = new_consumer(
            self.bootstrap, None,
            request_timeout_ms=int(self.call_s * 500), fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )  # fmt: skip
        try:
            await self._step(consumer.start(), "start a reader")
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            consumer.pause(*tps)  # fetched only during a round (`_round`)
            await self._step(consumer.seek_to_beginning(*tps), "seek to its beginning")
            book = SilenceBook(self.book.limit)  # a new reader reads it all again
            while not stop.is_set():
                await self._round(consumer, tps, book)
                if self.book is not book:
                    self.book = book
                    log.info("webhook_silences_read", topic=self.topic, silences=len(book))
                backoff.reset()
                self._wanted.clear()
                waits = [asyncio.ensure_future(e.wait()) for e in (self._wanted, stop)]
                try:
                    await asyncio.wait(waits, timeout=IDLE_S, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()
        finally:
            await stop_consumer(consumer, within_s=self.call_s)

    async def _round(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], book: SilenceBook
    ) -> None:
        began = time.monotonic()
        ends = await self._step(consumer.end_offsets(tps), "give its end offsets")
        if await self._behind(consumer, tps, ends):  # (else no fetch is begun at all)
            consumer.resume(*tps)
            try:
                await self._read_to(consumer, tps, ends, book)
            finally:
                consumer.pause(*tps)  # no fetch held at the broker ahead of the next round
        self.synced_at = began
        self.rounds += 1
        self._problem = None
        synced, self._synced = self._synced, asyncio.Event()
        synced.set()

    async def _read_to(
        self,
        consumer: AIOKafkaConsumer,
        tps: list[TopicPartition],
        ends: dict[TopicPartition, int],
        book: SilenceBook,
    ) -> None:
        last_progress = time.monotonic()
        while True:
            behind = await self._behind(consumer, tps, ends)
            if not behind:
                break
            batch = await self._step(
                consumer.getmany(*behind, timeout_ms=POLL_MS), "return its records"
            )
            for records in batch.values():
                for record in records:
                    self._apply(book, record.key, record.value)
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self.call_s:
                raise SilencesUnreadable(
                    f"reading silences topic {self.topic} made no progress for {self.call_s:g} s"
                )

    async def _behind(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]
    ) -> list[TopicPartition]:
        return [
            tp
            for tp in tps
            if await self._step(consumer.position(tp), "give a position") < ends[tp]
        ]

    def _apply(self, book: SilenceBook, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if key is not None:
                book.put(key.decode(errors="replace"), None)
            return
        try:
            silence = silence_of_record(key, value)
        except ValueError as exc:  # (a ValidationError is one)
            self.skipped += 1
            log.warning("webhook_silence_invalid", topic=self.topic, error=str(exc).splitlines()[0])
            if key is not None:  # the key's latest record decides, as after a compaction
                book.put(key.decode(errors="replace"), None)
            return
        dropped = book.dropped_active
        book.put(silence.silence_id, silence)
        if book.dropped_active > dropped:
            log.warning("webhook_silences_over_bound", kept=len(book), dropped_active=1)

    async def _step(self, step: Awaitable[T], what: str) -> T:
        try:
            async with deadline(self.call_s):
                return await step
        except (TimeoutError, KafkaError) as exc:
            why = (
                f"within {self.call_s:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__
            )
            raise SilencesUnreadable(
                f"Kafka at {self.bootstrap} did not {what} (silences topic {self.topic}): {why}"
            ) from None
