"""Which alert offsets one endpoint may commit while its deliveries finish out of order.

Each endpoint consumes `alerts` in its own consumer group, and with
`concurrency > 1` its deliveries finish in any order. A partition's offset is
committed up to (not including) the lowest record that still has a delivery
pending, so a restart re-delivers only what may not have been delivered
(receivers de-duplicate on `webhook-id`). A dead endpoint holds back only its
own group, and for about one retry horizon (delivery.py, `EndpointHealth`).

Each commit also carries, as its metadata, the offsets above that position
whose delivery finished (done.py), so a restart does not deliver them again; a
partition is offered for a commit whenever its position or that set changed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from aiokafka import TopicPartition

from sinks.webhooks import done as done_offsets
from sinks.webhooks.done import Range


class Commit(NamedTuple):
    """One partition's commit: what aiokafka's `commit` takes, `(offset, metadata)`."""

    offset: int
    metadata: str


@dataclass
class _Partition:
    pending: dict[int, int] = field(default_factory=dict)
    next_offset: int = 0
    committed: Commit = field(default_factory=lambda: Commit(-1, ""))
    finished: list[Range] = field(default_factory=list)
    """Offsets whose delivery ended in this assignment, above the position, as sorted
    disjoint ranges (done.add)."""
    restored: list[Range] = field(default_factory=list)
    """The done ranges this assignment started with (done.py), sorted."""
    left_out: int = 0
    """Done offsets the last metadata had no room for."""
    commit: Commit | None = None
    """The commit its state gives, until that changes (None: to work out again): it is
    asked for every `COMMIT_INTERVAL_S`, also while nothing moves."""


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}
        self._metadata_limit = done_offsets.MAX_METADATA_BYTES
        self._bare: set[TopicPartition] = set()
        """Partitions whose metadata alone the broker refused (`refuse_metadata`)."""

    def restore(self, tp: TopicPartition, ranges: Sequence[Range]) -> None:
        """The done ranges the partition's last commit carried: its records there were
        finished, before this assignment (call before any of its records is consumed)."""
        part = self._parts.setdefault(tp, _Partition())
        part.restored, part.commit = sorted(ranges), None

    def finished_before(self, tp: TopicPartition, offset: int) -> bool:
        """Whether the record's delivery finished before this assignment (`restore`)."""
        part = self._parts.get(tp)
        return part is not None and done_offsets.contains(part.restored, offset)

    def consumed(self, tp: TopicPartition, offset: int, deliveries: int) -> None:
        part = self._parts.setdefault(tp, _Partition())
        if deliveries > 0:
            part.pending[offset] = deliveries
        else:  # finished as it is read (filtered out, a repeat, invalid, done before)
            done_offsets.add(part.finished, offset)
        part.next_offset = max(part.next_offset, offset + 1)
        part.commit = None

    def done(self, tp: TopicPartition, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None or offset not in part.pending:
            return  # revoked meanwhile: its new owner re-delivers (a job read before
            # the revocation never gets here: the endpoint checks its generation)
        part.pending[offset] -= 1
        if part.pending[offset] == 0:
            del part.pending[offset]
            done_offsets.add(part.finished, offset)
            part.commit = None

    def committable(self) -> dict[TopicPartition, Commit]:
        """Commits to make now: those whose position or done offsets changed since the
        last `committed`. Also notes, per partition, the done offsets left out."""
        out: dict[TopicPartition, Commit] = {}
        for tp, part in self._parts.items():
            if part.next_offset == 0:
                continue  # nothing read yet (only `restore`d): its position is unknown
            commit = self._commit_of(tp, part)
            if commit == part.committed or commit.offset < part.committed.offset:
                continue
            if commit.offset > 0 or commit.metadata:
                out[tp] = commit
        return out

    def _commit_of(self, tp: TopicPartition, part: _Partition) -> Commit:
        if part.commit is not None:
            return part.commit
        upto = min(part.pending) if part.pending else part.next_offset
        part.finished = done_offsets.at_or_above(part.finished, upto)
        restored = done_offsets.at_or_above(part.restored, upto)
        ranges = done_offsets.merge(part.finished, restored, sorted(part.pending), part.next_offset)
        limit = 0 if tp in self._bare else self._metadata_limit
        encoded = done_offsets.encode(upto, ranges, limit)
        part.left_out = encoded.left_out
        part.commit = Commit(upto, encoded.metadata)
        return part.commit

    @property
    def metadata_limit(self) -> int:
        """Bytes of done offsets a commit's metadata may hold (0: none, the broker
        refused them: `refuse_metadata`)."""
        return self._metadata_limit

    def refuse_metadata(self, tps: Collection[TopicPartition] | None = None) -> None:
        """The broker refuses the metadata (of `tps` only: theirs alone is too large for
        it): commits (of `tps`) carry none from now on."""
        if tps is None:
            self._metadata_limit = 0
        else:
            self._bare.update(tps)
        for tp, part in self._parts.items():
            if tps is None or tp in tps:
                part.commit = None

    def left_out(self, tp: TopicPartition) -> int:
        """Done offsets of `tp` its last offered commit had no room for."""
        part = self._parts.get(tp)
        return part.left_out if part is not None else 0

    def committed(self, offsets: Mapping[TopicPartition, Commit]) -> None:
        """Kafka took `offsets`: they are not offered again (a failed commit's are)."""
        for tp, commit in offsets.items():
            part = self._parts.get(tp)
            if part is not None and commit.offset >= part.committed.offset:
                part.committed = commit

    def idle(self) -> bool:
        return not any(part.pending for part in self._parts.values())

    def forget(self, tp: TopicPartition) -> None:
        self._parts.pop(tp, None)
