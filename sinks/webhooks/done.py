"""The deliveries an endpoint finished above its committed position, kept in the commit.

With `concurrency > 1` deliveries finish out of order, and a partition's position
stays below its lowest record still pending (offsets.py): one delivery retried
for minutes holds it while everything after it is delivered. A stop or a crash
then re-read those records and posted them again (Slack and Teams do not
de-duplicate on `webhook-id`). So every commit of a partition also carries, in
the offset commit's metadata string, the offsets above the committed one whose
delivery had finished (delivered or given up); when the partition is assigned
again, those records are not delivered again (warmup.py reads the metadata,
the endpoint skips them).

The format is `d2:`, the committed offset `c` it was written with, `:`, then
comma-separated ranges relative to `c`: each range is `gap` or `gap.length`
(length 1 when left out), the gap counted from the end of the previous range
(`c` for the first), all in decimal. `d2:100:1,3.2` is {101, 105, 106}. Metadata
found with another committed offset than its own `c` (a tool that moved the
offset and copied the metadata) is no done offset: relative to the new offset it
would skip records never delivered. A range may also cover
records that needed no delivery (filtered out, a repeat, invalid): they are
finished too, and merging over them keeps the string short; it never covers a
record still pending, nor one not read yet.

Bounds: the broker refuses metadata over `offset.metadata.max.bytes` (4096 by
default), so the string stays within `MAX_METADATA_BYTES`; past that, the
lowest ranges are kept and the rest left out (`Encoded.left_out`): those are
posted again after a restart, as before. (A commit of many partitions also
stays under the broker's `message.max.bytes`: commits.py.) Decoding never raises: an empty,
unknown or garbled string is no done offset (everything above the position is
delivered, as before), never a skipped delivery of a record not finished.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.deadline import deadline

log = structlog.stdlib.get_logger(__name__)

VERSION = "d2:"
"""`d1:` (ranges with no position, never released) reads as garbled."""
MAX_METADATA_BYTES = 3_000
"""Well under the broker's default `offset.metadata.max.bytes` (4096)."""
MAX_DIGITS = 19
"""A gap or length longer than any Kafka offset (a signed 64-bit integer) is garbled."""
READ_TIMEOUT_S = 10.0
"""Reading an assignment's committed metadata gives up after this (nothing is skipped)."""

Range = tuple[int, int]
"""Offsets `[start, end)`."""


@dataclass(frozen=True)
class Encoded:
    metadata: str
    left_out: int
    """Offsets of ranges that did not fit (0: all of them are in `metadata`)."""


def encode(committed: int, ranges: Sequence[Range], limit: int = MAX_METADATA_BYTES) -> Encoded:
    """`ranges` (sorted, disjoint, at or above `committed`) as commit metadata."""
    if not ranges:
        return Encoded("", 0)
    parts = [f"{VERSION}{committed}:"]
    size = len(parts[0])
    prev = committed
    for i, (start, end) in enumerate(ranges):
        item = str(start - prev) if end - start == 1 else f"{start - prev}.{end - start}"
        item = item if i == 0 else "," + item
        if size + len(item) > limit:
            kept = "".join(parts) if i else ""  # none fits (`limit` 0: no metadata at all)
            return Encoded(kept, sum(e - s for s, e in ranges[i:]))
        parts.append(item)
        size += len(item)
        prev = end
    return Encoded("".join(parts), 0)


def decode(committed: int, metadata: str | None) -> list[Range]:
    """The done ranges in `metadata` committed with `committed`; [] for anything else."""
    if not metadata or not metadata.startswith(VERSION) or committed < 0:
        return []
    base, colon, body = metadata[len(VERSION) :].partition(":")
    if not colon or not body or len(metadata) > 2 * MAX_METADATA_BYTES:
        return []
    if not _decimal(base) or int(base) != committed:
        return []  # written with another position: relative to this one it is wrong
    out: list[Range] = []
    prev = committed
    for item in body.split(","):
        gap, _, length = item.partition(".")
        if not _decimal(gap) or not (length == "" or _decimal(length)):
            return []  # garbled: no done offset at all, rather than some wrong ones
        size = int(length) if length else 1
        if size < 1:
            return []
        start = prev + int(gap)
        out.append((start, start + size))
        prev = start + size
    return out


def written_at(metadata: str) -> int | None:
    """The committed offset our metadata was written with (None: not ours or garbled)."""
    base, colon, _ = metadata.removeprefix(VERSION).partition(":")
    if not metadata.startswith(VERSION) or not colon or not _decimal(base):
        return None
    return int(base)


def _decimal(text: str) -> bool:
    # `int` also takes " 1" and non-ASCII digits, and raises past 4,300 digits
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS


def contains(ranges: Sequence[Range], offset: int) -> bool:
    i = bisect.bisect_right(ranges, offset, key=lambda r: r[0]) - 1
    return i >= 0 and ranges[i][0] <= offset < ranges[i][1]


def add(ranges: list[Range], offset: int) -> None:
    """Put `offset` into `ranges` (sorted, disjoint), joining the ranges it touches: a
    record held for an hour while thousands finish after it stays one range."""
    i = bisect.bisect_right(ranges, offset, key=lambda r: r[0])
    if i and ranges[i - 1][1] > offset:
        return  # already in
    left = i > 0 and ranges[i - 1][1] == offset
    right = i < len(ranges) and ranges[i][0] == offset + 1
    if left and right:
        ranges[i - 1] = (ranges[i - 1][0], ranges[i][1])
        del ranges[i]
    elif left:
        ranges[i - 1] = (ranges[i - 1][0], offset + 1)
    elif right:
        ranges[i] = (offset, ranges[i][1])
    else:
        ranges.insert(i, (offset, offset + 1))


def at_or_above(ranges: Sequence[Range], offset: int) -> list[Range]:
    """The part of `ranges` at or above `offset`."""
    return [(max(s, offset), e) for s, e in ranges if e > offset]


def merge(
    finished: Iterable[Range], restored: Iterable[Range], pending: Sequence[int], read_to: int
) -> list[Range]:
    """One partition's done ranges, as few as possible.

    `finished`: the ranges whose deliveries ended in this assignment; `restored`: the
    ranges this assignment started with; `pending` (sorted): offsets still to be
    delivered; `read_to`: the next offset to read. Two ranges are merged over the
    records between them only when those were all read and none is pending (they
    needed no delivery): never over a record not read yet, which may be one the
    commit that wrote `restored` had pending.
    """
    spans = sorted([*finished, *restored])
    out: list[Range] = []
    for start, end in spans:
        if out:
            last_start, last_end = out[-1]
            if start <= last_end or (start <= read_to and not _any_in(pending, last_end, start)):
                out[-1] = (last_start, max(last_end, end))
                continue
        out.append((start, end))
    return out


def _any_in(sorted_offsets: Sequence[int], start: int, end: int) -> bool:
    i = bisect.bisect_left(sorted_offsets, start)
    return i < len(sorted_offsets) and sorted_offsets[i] < end


class LeftOutLog:
    """Logs, once per partition until they fit again, done offsets a commit left out."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._partitions: set[TopicPartition] = set()

    def note(self, tp: TopicPartition, left_out: int) -> None:
        if not left_out:
            self._partitions.discard(tp)
            return
        if tp not in self._partitions:
            self._partitions.add(tp)
            log.warning(
                "webhook_done_offsets_left_out",
                endpoint=self.endpoint,
                partition=tp.partition,
                offsets=left_out,
                consequence="these finished deliveries above the committed position are "
                "delivered again after a stop or a crash",
            )


async def read_done(
    consumer: AIOKafkaConsumer,
    tps: Collection[TopicPartition],
    endpoint: str,
    timeout_s: float = READ_TIMEOUT_S,
) -> dict[TopicPartition, list[Range]]:
    """The done ranges the endpoint's group committed for `tps`; {} (logged) on failure.

    Read through the endpoint consumer's own group coordinator (the one its
    positions come from: same connection and credentials; aiokafka's public
    `committed` drops the metadata), within `timeout_s` (its fetch retries a
    missing coordinator for ever). A failure only means the records above the
    position are delivered again, as before this metadata existed.
    """
    try:
        async with deadline(timeout_s):
            offsets = await consumer._coordinator.fetch_committed_offsets(list(tps))
    except Exception as exc:  # a timeout, Kafka's errors, an aiokafka without it
        error = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        log.warning(
            "webhook_done_offsets_unread",
            endpoint=endpoint,
            partitions=sorted(tp.partition for tp in tps),
            error=error,
            consequence="deliveries finished above the committed position before the last "
            "stop are delivered again",
        )
        return {}
    out: dict[TopicPartition, list[Range]] = {}
    for tp, committed in offsets.items():
        ranges = decode(committed.offset, committed.metadata)
        at = written_at(committed.metadata or "")
        if at is not None and at != committed.offset:
            log.warning(
                "webhook_done_offsets_moved",
                endpoint=endpoint,
                partition=tp.partition,
                written_at=at,
                committed=committed.offset,
                consequence="the position was moved (a tool?) and the metadata kept: it is "
                "ignored, this partition's records above its position are delivered again",
            )
        elif committed.metadata and not ranges:
            log.warning(
                "webhook_done_offsets_garbled",
                endpoint=endpoint,
                partition=tp.partition,
                metadata=committed.metadata[:80],
                consequence="this partition's records above its position are delivered again",
            )
        if ranges:
            out[tp] = ranges
    return out
