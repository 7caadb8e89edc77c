"""The messages a silence held, kept on Kafka: sent when no silence covers them any more.

An endpoint that records an open alert's latest message `silenced` keeps it (in
`EndpointPipe.held`) and writes it to the compacted `webhook-held` topic, key
`<endpoint>|<alert id>`: the alert, its `webhook-id` and where its record is on
`alerts`. Once sent (its outcome recorded), or once a later message of the alert was
read (resolved, escalated: that one decides), the key gets a tombstone. A partition
newly assigned to an endpoint (its start, a rebalance) has what is held of it read
back from the topic (`read_held`), so a notifier restarted during a maintenance
window, or the partition's next owner, still sends the alert when the window ends,
and a message sent before the restart is not sent again. A read that fails is tried
again while the partitions stay assigned; past the endpoint's bound (`MAX_HELD`) a
message stays on the topic only and is read back once the endpoint holds fewer
(dispatcher.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Set
from datetime import datetime

from aiokafka import TopicPartition
from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.alerts import Alert
from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks.topic_read import TopicReader
from sinks.webhooks.silences import Silence, SilenceBook

HELD_TOPIC = "webhook-held"
POLL_MS = 200


class HeldMessage(BaseModel):
    """One message a silence held: what is needed to send it as it would have been."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    webhook_id: str
    partition: int
    offset: int
    alert: Alert


def held_key(endpoint: str, alert_id: str) -> str:
    return f"{endpoint}|{alert_id}"


async def read_held(
    bootstrap: Kafka,
    topic: str,
    topic_partitions: int,
    endpoint: str,
    partitions: Collection[int],
    *,
    call_s: float,
) -> dict[str, HeldMessage]:
    """What `endpoint` holds of the `alerts` partitions `partitions`, by alert id: the
    whole topic (its partitions 0..`topic_partitions`-1) read to its end offsets
    (`sinks.topic_read`: a consumer of no group), the latest value of each key. Raises
    `TimeoutError` past `call_s` for the whole read, Kafka's errors."""
    prefix = f"{endpoint}|".encode()
    found = await _latest(bootstrap, topic, topic_partitions, prefix, call_s=call_s)
    return {
        key[len(prefix) :].decode(errors="replace"): held
        for key, held in found.items()
        if held.partition in partitions
    }


async def count_held(
    bootstrap: Kafka,
    topic: str,
    topic_partitions: int,
    endpoints: Collection[str],
    *,
    call_s: float,
) -> dict[str, int]:
    """How many alerts each of `endpoints` holds on the topic (every partition of
    `alerts`), read as `read_held` reads it: what a drain leaves held says so."""
    found = await _latest(bootstrap, topic, topic_partitions, b"", call_s=call_s)
    counts = dict.fromkeys(endpoints, 0)
    for held in found.values():
        if held.endpoint in counts:
            counts[held.endpoint] += 1
    return counts


async def _latest(
    bootstrap: Kafka, topic: str, topic_partitions: int, prefix: bytes, *, call_s: float
) -> dict[bytes, HeldMessage]:
    """The latest held message of each key that starts with `prefix`, tombstoned keys left
    out (`read_held`)."""
    found: dict[bytes, HeldMessage] = {}
    reader = TopicReader(
        bootstrap, topic, topic_partitions, stall_s=call_s, close_s=call_s,
        own_deadlines=False, poll_ms=POLL_MS,
    )  # fmt: skip
    try:
        async with deadline(call_s):
            await reader.start()
            async for records in reader.batches_to_end():
                for record in records:
                    if record.key is None or not record.key.startswith(prefix):
                        continue
                    if record.value is None:
                        found.pop(record.key, None)
                        continue
                    try:
                        held = HeldMessage.model_validate_json(record.value)
                    except ValidationError:
                        continue  # not ours to send: left to the alert's next change
                    found[record.key] = held
    finally:
        await reader.close()
    return found


class ReleaseWatch:
    """Which held messages the next release check must look at, and what they must be
    looked up in the silences for (dispatcher.py, `EndpointPipe._release_ended`).

    Looking every held message up in the silences each second cost O(held x silences)
    on the event loop, changed or not. A check looks at all of them only once something
    can have released or dropped one since it last did: the silence book (a new book, a
    `put`: a silence expired, removed, added, trimmed), the wall clock passing the end
    of a silence that holds one (`until`), the partitions' warm-ups (a message of a
    partition warming is skipped), its assignment (`changed`: an assignment, a
    revocation, a partition forgotten). Else it looks only at those `touch`ed: newly
    held (silenced now, or read back from the held topic: its silence may end before
    `until`, or the book may have changed between its look-up and its hold), or whose
    alert was read again (a later message decides).

    And a message looked at is looked up in the book only if the silence that held it
    last (`silencing`) is no longer in the book as it was, or no longer in force: one
    silence expired among thousands, or the whole topic read anew, looks up only what
    it changed."""

    def __init__(self) -> None:
        self.dirty = True
        self.until: datetime | None = None
        """The earliest end of a silence holding a message looked at (None: none holds)."""
        self._touched: dict[str, None] = {}
        self._held_by: dict[str, Silence] = {}
        """Alert id -> the silence that held its held message when last looked at."""
        self._book: SilenceBook | None = None
        self._version = -1
        self._warming: frozenset[TopicPartition] = frozenset()

    def changed(self) -> None:
        """Something may release or drop any held message: the next check looks at all."""
        self.dirty = True

    def touch(self, alert_id: str) -> None:
        """The held message of `alert_id` (its alert read again): looked at next check."""
        self._touched[alert_id] = None

    def held(self, alert_id: str, by: Silence | None) -> None:
        """A message of `alert_id` newly held, by silence `by` (None: not known, read
        back): looked at next check, and looked up then unless `by` still holds it."""
        self.touch(alert_id)
        if by is None:
            self._held_by.pop(alert_id, None)
        else:
            self._held_by[alert_id] = by

    def gone(self, alert_id: str) -> None:
        """The held message of `alert_id` released or dropped."""
        self._held_by.pop(alert_id, None)

    def silencing(
        self, book: SilenceBook, alert_id: str, alert: Alert, endpoint: str, now: datetime
    ) -> Silence | None:
        """`book.silencing(alert, endpoint, now)` for a held message: the silence that held
        it last while it is still in `book` unchanged (the same, or an equal one read
        anew) and in force (it covers the same alert then), else the book's look-up;
        `until` lowered to its end."""
        known = self._held_by.get(alert_id)
        current = None if known is None else book.silences.get(known.silence_id)
        if (
            known is not None
            and known.in_force(now)
            and (current is known or current == known)  # (a book read anew: equal)
        ):
            found: Silence | None = known
        else:
            found = book.silencing(alert, endpoint, now)
        if found is None:
            self._held_by.pop(alert_id, None)
            return None
        self._held_by[alert_id] = found
        if self.until is None or found.ends_at < self.until:
            self.until = found.ends_at  # none it holds is released before, the book as is
        return found

    def to_check(
        self,
        held: Mapping[str, object],
        book: SilenceBook,
        warming: Set[TopicPartition],
        now: datetime,
    ) -> list[str]:
        """The alert ids of `held` to look at now: all of them once something changed
        (the state looked at is then remembered, `until` computed anew), else those
        touched since the last check."""
        touched, self._touched = self._touched, {}
        if not (
            self.dirty
            or book is not self._book
            or book.version != self._version
            or warming != self._warming
            or (self.until is not None and now >= self.until)
        ):
            return [alert_id for alert_id in touched if alert_id in held]
        self.dirty = False
        self._book, self._version, self._warming = book, book.version, frozenset(warming)
        self.until = None
        return list(held)
