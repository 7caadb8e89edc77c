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
(dispatcher.py); a read keeps no more than that bound in memory, however many the topic
holds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import TopicPartition
from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.alerts import Alert
from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks.topic_read import TopicReader
from sinks.webhooks.invalid import reason_for
from sinks.webhooks.records import WebhookId
from sinks.webhooks.silences import Silence, SilenceBook

HELD_TOPIC = "webhook-held"
POLL_MS = 200


class HeldMessage(BaseModel):
    """One message a silence held: what is needed to send it as it would have been."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    webhook_id: WebhookId
    partition: int
    offset: int
    alert: Alert


def held_key(endpoint: str, alert_id: str) -> str:
    return f"{endpoint}|{alert_id}"


@dataclass(frozen=True)
class HeldRead:
    """What a read of the held topic found of one endpoint."""

    found: dict[str, HeldMessage]
    """Alert id -> its held message (of the partitions asked), at most `limit`."""
    more: bool
    """Messages of those partitions were left on the topic past `limit`: read again once
    the endpoint can keep more (`dispatcher._reread_over_bound`)."""
    unknown: dict[str, int] = field(default_factory=dict)
    """Endpoint -> how many messages (keys not tombstoned) it has on the topic, of each
    endpoint not among `known` (only when `known` was given); a lower bound for those in
    `unknown_more`."""
    unknown_more: frozenset[str] = frozenset()
    """Endpoints of `unknown` that had more messages than the read counted (`limit` keys
    counted in all)."""
    invalid: int = 0
    """The endpoint's keys whose latest record is no message of it (not JSON, not a
    `HeldMessage`, `held_problem`): not held, so never sent when their silence ends."""
    invalid_reason: str = ""
    """Why the first of them (by alert id) is not, its key named: for the log."""


def held_problem(held: HeldMessage, endpoint: str, alert_id: str) -> str | None:
    """Why a valid `HeldMessage` read under key `<endpoint>|<alert_id>` is not that key's
    message, None if it is. One of another alert or endpoint was held under the key's
    alert id, and its release tombstoned its own key, never this one: it was sent again
    after every restart (the record is no notifier's: a tool or a hand wrote it)."""
    if held.endpoint != endpoint:
        return f"its endpoint {held.endpoint!r} is not the key's"
    if held.alert.alert_id != alert_id:
        return f"its alert_id {held.alert.alert_id!r} is not the key's"
    return None


async def read_held(
    bootstrap: Kafka,
    topic: str,
    topic_partitions: int,
    endpoint: str,
    partitions: Collection[int],
    *,
    call_s: float,
    limit: int,
    known: Collection[str] | None = None,
) -> HeldRead:
    """What `endpoint` holds of the `alerts` partitions `partitions`, by alert id: the
    whole topic (its partitions 0..`topic_partitions`-1) read to its end offsets
    (`sinks.topic_read`: a consumer of no group), the latest value of each key. At most
    `limit` alerts are kept while reading (the caller's bound: a topic may hold far
    more), the first keys met; a later tombstone or value of a key kept still applies to
    it, and `more` says whether others were left. With `known` (the endpoints of the
    reader's subscriptions file), the messages of any other endpoint are counted too, by
    endpoint (`unknown`: at most `limit` keys remembered for it). Raises `TimeoutError`
    past `call_s` for the whole read, Kafka's errors."""
    found: dict[str, HeldMessage] = {}
    more = False
    invalid: dict[str, str] = {}
    """Alert id -> why its latest record is no message of the endpoint (at most `limit`)."""
    prefix = f"{endpoint}|".encode()
    others = _Others(None if known is None else {e.encode() for e in known}, limit)

    def take(key: bytes, value: bytes | None) -> None:
        nonlocal more
        if not key.startswith(prefix):
            others.count(key, value is None)
            return
        alert_id = key[len(prefix) :].decode(errors="replace")
        invalid.pop(alert_id, None)  # a later record of the key decides
        if value is None:
            found.pop(alert_id, None)
            return
        problem: str | None
        try:
            held = HeldMessage.model_validate_json(value)
        except ValidationError as exc:
            problem = reason_for(exc)
        else:
            problem = held_problem(held, endpoint, alert_id)
        if problem is not None:  # not ours to send: left to the alert's next change, and
            if len(invalid) < limit:  # said (`invalid`)
                invalid[alert_id] = f"key {key[:200]!r}: {problem}"  # (repr: no control char)
            return
        if held.partition not in partitions:
            found.pop(alert_id, None)  # (an alert's partition does not change)
        elif alert_id in found or len(found) < limit:
            found[alert_id] = held
        else:
            more = True  # left on the topic: read once fewer are kept

    await _each_record(bootstrap, topic, topic_partitions, take, call_s=call_s)
    first = invalid[min(invalid)] if invalid else ""  # (the same whatever partition came first)
    return HeldRead(found, more, others.counts(), frozenset(others.more), len(invalid), first)


async def count_held(
    bootstrap: Kafka,
    topic: str,
    topic_partitions: int,
    endpoints: Collection[str],
    *,
    call_s: float,
    limit: int,
) -> dict[str, int]:
    """How many alerts each of `endpoints` holds on the topic (every partition of
    `alerts`; keys not tombstoned), read as `read_held` reads it: what a drain leaves
    held says so. Only keys are kept, at most `limit` in all (past it a count is a lower
    bound)."""
    counting = _Others(set(), limit)
    wanted = {e.encode() for e in endpoints}

    def take(key: bytes, value: bytes | None) -> None:
        if key.partition(b"|")[0] in wanted:
            counting.count(key, value is None)

    await _each_record(bootstrap, topic, topic_partitions, take, call_s=call_s)
    counts = dict.fromkeys(endpoints, 0)
    counts.update((e, n) for e, n in counting.counts().items() if e in counts)
    return counts


async def _each_record(
    bootstrap: Kafka,
    topic: str,
    topic_partitions: int,
    take: Callable[[bytes, bytes | None], None],
    *,
    call_s: float,
) -> None:
    """`take(key, value)` for each keyed record of the whole topic (its partitions
    0..`topic_partitions`-1) up to its end offsets, in each partition's order: a
    consumer of no group (`sinks.topic_read`). Raises `TimeoutError` past `call_s` for
    the whole read, Kafka's errors."""
    reader = TopicReader(
        bootstrap, topic, topic_partitions, stall_s=call_s, close_s=call_s,
        own_deadlines=False, poll_ms=POLL_MS,
    )  # fmt: skip
    try:
        async with deadline(call_s):
            await reader.start()
            async for records in reader.batches_to_end():
                for record in records:
                    if record.key is not None:
                        take(record.key, record.value)
    finally:
        await reader.close()


class _Others:
    """The messages of endpoints not among `known`, counted by key (None: not counted)."""

    def __init__(self, known: set[bytes] | None, limit: int) -> None:
        self.known = known
        self.limit = limit
        self.keys: dict[bytes, set[bytes]] = {}
        self.kept = 0
        self.more: set[str] = set()

    def count(self, key: bytes, tombstone: bool) -> None:
        endpoint, sep, alert_id = key.partition(b"|")
        if self.known is None or not sep or endpoint in self.known:
            return
        keys = self.keys.setdefault(endpoint, set())
        if tombstone:
            if alert_id in keys:
                keys.remove(alert_id)
                self.kept -= 1
        elif alert_id not in keys:
            if self.kept < self.limit:
                keys.add(alert_id)
                self.kept += 1
            else:
                self.more.add(endpoint.decode(errors="replace"))

    def counts(self) -> dict[str, int]:
        names = {e: e.decode(errors="replace") for e in self.keys}
        return {names[e]: len(k) for e, k in self.keys.items() if k or names[e] in self.more}


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
