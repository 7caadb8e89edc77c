"""Group commit: which waiting requests share the next Kafka transaction of a free producer.

A transaction costs the same few round trips (begin, add partitions, commit and
its markers) whether it holds one record or a thousand, and transactions on one
producer are sequential: with one transaction per request, single-scan posts
topped out at ~50 requests/s on 2 cores, whatever the size of the pool. So the
requests that wait while every producer is busy are committed together, as one
transaction, when a producer is free: each request is still all-or-nothing (its
records are in one transaction), and every member gets the group's outcome.

Bounds: a group never holds more records or bytes than the largest single
request may (`max_items`, `max_body_bytes`), so a group's transaction is no
bigger than one the gateway already had to commit; the first request of a group
is always taken, however large. A group lives only until its earliest member's
deadline, so a request with little time left (less than `solo_below_s`) is
committed alone rather than cutting a whole group short.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from streams.ingest.records import OutRecord, Placement


@dataclass(eq=False, slots=True)
class Member:
    """One request waiting for, or committed in, a group's transaction."""

    records: Sequence[OutRecord]
    deadline_at: float
    """`loop.time()` by which the request must have its answer."""
    outcome: asyncio.Future[list[Placement]]
    size: int = field(init=False)
    group: asyncio.Task[None] | None = None
    """The task committing it; None while it waits."""

    def __post_init__(self) -> None:
        self.size = sum(len(r.key or b"") + len(r.value or b"") for r in self.records)


@dataclass(frozen=True, slots=True)
class GroupBounds:
    max_records: int
    max_bytes: int
    solo_below_s: float


def take_group(waiting: deque[Member], bounds: GroupBounds, now: float) -> list[Member]:
    """Take the next group off the front of `waiting` (arrival order), at least one member.

    A member that does not fit the bounds, or has less than `solo_below_s` left,
    stays at the front for the next group: order is kept, nobody is overtaken
    for ever.
    """
    first = waiting.popleft()
    group = [first]
    if first.deadline_at - now < bounds.solo_below_s:
        return group
    records, size = len(first.records), first.size
    while waiting:
        member = waiting[0]
        records += len(member.records)
        size += member.size
        if (
            records > bounds.max_records
            or size > bounds.max_bytes
            or member.deadline_at - now < bounds.solo_below_s
        ):
            break
        group.append(waiting.popleft())
    return group
