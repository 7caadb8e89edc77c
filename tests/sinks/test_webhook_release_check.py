"""The release check of what silences hold (dispatcher.py `_release_ended`, held.py
`ReleaseWatch`): with nothing changed it looks no held alert up in the silences; each
thing that can release or drop one makes it look again, and releases or drops it; a
silence that changed has only what it held looked up again.

Every second each endpoint walked every held alert (up to 100,000) against every
silence (up to 10,000) on the notifier's event loop, changed or not. No broker: one
endpoint's pipe fed records by hand, a real silence book counting its look-ups.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from sink_samples import make_alert
from webhook_pipes import LogProducer, offline_pipe, records_of

from schemas.alerts import Alert, AlertStatus, Severity
from sinks.webhooks.outcomes import Job
from sinks.webhooks.silence_follower import SilenceFollower
from sinks.webhooks.silences import Silence, SilenceBook

TP = TopicPartition("cw.alerts", 2)
OTHER = TopicPartition("cw.alerts", 4)
WAIT_S = 10.0


class CountingBook(SilenceBook):
    """A silence book that counts its look-ups (`silencing`)."""

    def __init__(self) -> None:
        super().__init__()
        self.looked = 0

    def silencing(self, alert: Alert, endpoint: str, now: datetime) -> Silence | None:
        self.looked += 1
        return super().silencing(alert, endpoint, now)


def silence(*orders: str, ends_in: timedelta = timedelta(hours=1)) -> Silence:
    now = datetime.now(UTC)
    return Silence(
        order_ids=list(orders),
        starts_at=now - timedelta(minutes=1),
        ends_at=now + ends_in,
        reason="maintenance",
    )


class Held:
    """One endpoint (of partitions `TP` and `OTHER`) holding what silences cover."""

    def __init__(self, name: str) -> None:
        self.follower = SilenceFollower("unused:9092", "cw.webhook-silences", 1, call_s=5.0)
        self.book = CountingBook()
        self.follower.book = self.book
        self.pipe = offline_pipe(name, silences=self.follower, producer=LogProducer())
        self.pipe.assigned([TP, OTHER])
        self.offsets = {TP: 0, OTHER: 0}

    def new_reader(self, ended: str) -> None:
        """The follower read the topic again (a new reader): a new book, the same silences
        read anew, but silence `ended` expired meanwhile (as many records as before)."""
        book = CountingBook()
        for key, s in self.book.silences.items():
            again = Silence.model_validate_json(s.model_dump_json())
            if key == ended:
                again = again.model_copy(update={"ends_at": datetime.now(UTC)})
            book.put(key, again)
        assert book.version == self.book.version
        self.book = self.follower.book = book

    def read_back(self, alert: Alert, tp: TopicPartition = TP) -> None:
        """`alert` held as `_restore_held` holds what it read back of `tp` (by no silence
        known), at the next offset."""
        job = Job(alert, f"msg_{alert.alert_id[:8]}", tp, self.offsets[tp], self.generation(tp))
        self.offsets[tp] += 1
        self.pipe._hold(job, counted=False)

    def generation(self, tp: TopicPartition) -> int:
        return self.pipe.assignments.generation(tp)

    def add(self, *silences: Silence) -> None:
        for s in silences:
            self.book.put(s.silence_id, s)

    async def read(self, alert: Alert, tp: TopicPartition = TP) -> None:
        """`alert`'s record read from `tp` (queued for delivery, unless a repeat)."""
        value = alert.model_dump_json().encode()
        await self.pipe.handle(tp, records_of(tp, [value], self.offsets[tp]))
        self.offsets[tp] += 1

    async def hold(self, alert: Alert, by: Silence, tp: TopicPartition = TP) -> None:
        """`alert` read, then recorded `silenced` by `by` and held, as a delivery does."""
        await self.read(alert, tp)
        job = self.pipe.queue.get_nowait()
        assert job.alert == alert
        await self.pipe._finish_silenced(job, by)
        assert self.pipe.held[alert.alert_id].msg_id == job.msg_id

    async def check(self) -> int:
        """One release check: how many held alerts it looked up in the silences."""
        before = self.book.looked
        await self.pipe._release_ended(self.follower)
        return self.book.looked - before

    def released(self) -> list[str]:
        """The alert ids the checks queued for delivery (released), emptying the queue."""
        jobs = []
        while not self.pipe.queue.empty():
            jobs.append(self.pipe.queue.get_nowait())
        return [job.alert.alert_id for job in jobs if job.released]

    async def released_within(self, wait_s: float) -> list[str]:
        """Check (every 50 ms, as the notifier every second) until one is released."""
        deadline = time.monotonic() + wait_s
        while not (released := self.released()):
            assert time.monotonic() < deadline, f"nothing released within {wait_s} s"
            await self.check()
            await asyncio.sleep(0.05)
        return released


def run(scenario: Any) -> None:
    asyncio.run(scenario())


def test_a_check_with_nothing_changed_looks_up_no_held_alert() -> None:
    async def scenario() -> None:
        held = Held("release-unchanged")
        silences = [silence(f"PO-{n}") for n in range(1, 4)]
        held.add(*silences)
        for n, by in enumerate(silences[:2], start=1):
            await held.hold(make_alert(n), by)  # silenced now: what holds it is known
        held.read_back(make_alert(3))  # read back: looked up at the next check
        assert await held.check() == 1
        assert [await held.check() for _ in range(3)] == [0, 0, 0]
        assert len(held.pipe.held) == 3
        assert held.released() == []

    run(scenario)


def test_the_silences_read_anew_release_what_one_that_expired_meanwhile_held() -> None:
    async def scenario() -> None:
        held = Held("release-new-reader")
        silences = [silence(f"PO-{n}") for n in range(1, 4)]
        held.add(*silences)
        for n, by in enumerate(silences, start=1):
            await held.hold(make_alert(n), by)
        assert await held.check() == 0
        # a new reader (after a failed round) read every silence again, as new objects
        held.new_reader(ended=silences[0].silence_id)
        assert await held.check() == 1  # what the ended one held; the others equal
        assert held.released() == [make_alert(1).alert_id]
        assert await held.check() == 0
        assert len(held.pipe.held) == 2

    run(scenario)


def test_a_silence_expired_or_removed_releases_what_it_held_at_the_next_check() -> None:
    async def scenario() -> None:
        held = Held("release-book-changed")
        first, second = silence("PO-1"), silence("PO-2")
        held.add(first, second)
        await held.hold(make_alert(1), first)
        await held.hold(make_alert(2), second)
        assert await held.check() == 0
        # `silences expire`: the silence written again, ending now
        now = datetime.now(UTC)
        held.add(first.model_copy(update={"ends_at": now}))
        assert await held.check() == 1  # what it held; the other's still holds it
        assert held.released() == [make_alert(1).alert_id]
        held.book.put(second.silence_id, None)  # its record removed (a tombstone)
        assert await held.check() == 1
        assert held.released() == [make_alert(2).alert_id]
        assert held.pipe.held == {}

    run(scenario)


def test_a_silence_ending_releases_what_it_held_at_its_end() -> None:
    async def scenario() -> None:
        held = Held("release-until")
        short, long = silence("PO-1", ends_in=timedelta(seconds=1.5)), silence("PO-2")
        held.add(short, long)
        await held.hold(make_alert(1), short)
        await held.hold(make_alert(2), long)
        assert await held.check() == 0
        assert await held.check() == 0  # (the short one has not ended yet)
        assert await held.released_within(WAIT_S) == [make_alert(1).alert_id]
        assert datetime.now(UTC) >= short.ends_at
        assert list(held.pipe.held) == [make_alert(2).alert_id]

    run(scenario)


def test_a_newly_held_alert_is_released_when_its_silence_ends_before_the_others() -> None:
    async def scenario() -> None:
        held = Held("release-new-hold")
        short, long = silence("PO-1", ends_in=timedelta(seconds=1.5)), silence("PO-2", "PO-3")
        held.add(short, long)
        await held.hold(make_alert(2), long)
        held.read_back(make_alert(3))  # (looked up once: the check computes `until`)
        assert await held.check() == 1
        assert await held.check() == 0
        await held.hold(make_alert(1), short)  # held after the check, ending first
        assert await held.check() == 0  # looked at: what holds it is known
        assert await held.released_within(WAIT_S) == [make_alert(1).alert_id]
        assert list(held.pipe.held) == [make_alert(2).alert_id, make_alert(3).alert_id]

    run(scenario)


def test_a_later_message_of_a_held_alert_drops_it_at_the_next_check() -> None:
    async def scenario() -> None:
        held = Held("release-later-message")
        dyeing = silence("PO-1")
        other = silence("PO-2")
        held.add(dyeing, other)
        await held.hold(make_alert(1), dyeing)
        await held.hold(make_alert(2), other)
        assert await held.check() == 0
        assert await held.check() == 0
        await held.read(make_alert(1, severity=Severity.WARNING))  # a later message
        await held.read(make_alert(2, AlertStatus.RESOLVED))  # resolved meanwhile
        assert await held.check() == 0  # dropped: their later messages decide
        assert held.pipe.held == {}
        assert held.released() == []  # (the later messages queued, as any read)

    run(scenario)


def test_a_held_alert_of_a_partition_warming_up_is_looked_at_once_it_is_warm() -> None:
    async def scenario() -> None:
        held = Held("release-warm")
        dyeing, other = silence("PO-1"), silence("PO-2")
        held.add(dyeing, other)
        await held.hold(make_alert(2), other, OTHER)
        assert await held.check() == 0
        # what `_restore_held` holds of a partition being warmed up (read back)
        held.pipe.warmup.warming.add(TP)
        held.read_back(make_alert(1))
        assert await held.check() == 0  # its later messages not known yet: not looked at
        held.add(dyeing.model_copy(update={"ends_at": datetime.now(UTC)}))  # expired
        assert await held.check() == 0
        assert held.released() == []
        held.pipe.warmup.warming.discard(TP)  # the warm-up read TP to its end
        assert await held.check() == 1
        assert held.released() == [make_alert(1).alert_id]

    run(scenario)


def test_a_revocation_drops_what_is_held_of_the_revoked_partition() -> None:
    async def scenario() -> None:
        held = Held("release-revoked")
        dyeing, other = silence("PO-1"), silence("PO-2")
        held.add(dyeing, other)
        await held.hold(make_alert(1), dyeing, TP)
        await held.hold(make_alert(2), other, OTHER)
        assert await held.check() == 0
        held.pipe.revoking([TP])
        assert await held.check() == 0
        assert list(held.pipe.held) == [make_alert(2).alert_id]  # TP's next owner reads it
        held.pipe.assigned([OTHER])  # OTHER assigned again: read back, not this one
        assert await held.check() == 0
        assert held.pipe.held == {}
        assert held.released() == []

    run(scenario)


def test_a_partition_forgotten_drops_what_is_held_of_it() -> None:
    async def scenario() -> None:
        held = Held("release-forgotten")
        dyeing, other = silence("PO-1"), silence("PO-2")
        held.add(dyeing, other)
        await held.hold(make_alert(1), dyeing, TP)
        await held.hold(make_alert(2), other, OTHER)
        assert await held.check() == 0
        held.pipe.forget(TP)  # as a warm-up that gives up does: TP is read again
        assert await held.check() == 0
        assert list(held.pipe.held) == [make_alert(2).alert_id]
        assert held.released() == []

    run(scenario)


class SlowBook(CountingBook):
    """A book whose look-ups take `each_s` of CPU (as ~10,000 silences do)."""

    def __init__(self, each_s: float) -> None:
        super().__init__()
        self.each_s = each_s

    def silencing(self, alert: Alert, endpoint: str, now: datetime) -> Silence | None:
        time.sleep(self.each_s)  # the event loop's thread, busy: what a long walk does
        return super().silencing(alert, endpoint, now)


def test_a_long_walk_lets_the_deliveries_run_between_its_slices() -> None:
    """A check that must look every held alert up (100,000 held x 10,000 silences: far
    more than a second) does it in slices of `RELEASE_SLICE_S`: the loop runs the
    endpoint's deliveries between them, and everything is still looked at."""

    async def scenario() -> None:
        held = Held("release-slices")
        held.book = held.follower.book = SlowBook(each_s=0.02)
        held.add(silence(*(f"PO-{n}" for n in range(1, 11))))
        for n in range(1, 11):
            held.read_back(make_alert(n))  # by no silence known: each looked up
        walking = True
        ran_meanwhile = 0

        async def deliveries() -> None:
            nonlocal ran_meanwhile
            while walking:
                ran_meanwhile += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(deliveries())
        await asyncio.sleep(0)  # (started)
        ran_before = ran_meanwhile
        assert await held.check() == 10  # 0.2 s of look-ups: at least three slices
        walking = False
        await other
        assert ran_meanwhile - ran_before >= 2
        assert len(held.pipe.held) == 10
        assert held.released() == []

    run(scenario)
