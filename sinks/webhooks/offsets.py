"""Which alert offsets one endpoint may commit while its deliveries finish out of order.

Each endpoint consumes `alerts` in its own consumer group, and with
`concurrency > 1` its deliveries finish in any order. A partition's offset is
committed up to (not including) the lowest record that still has a delivery
pending, so a restart re-delivers only what may not have been delivered
(receivers de-duplicate on `webhook-id`). A dead endpoint holds back only its
own group, and for about one retry horizon (delivery.py, `EndpointHealth`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition


@dataclass
class _Partition:
    pending: dict[int, int] = field(default_factory=dict)
    next_offset: int = 0
    committed: int = -1


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}

    def consumed(self, tp: TopicPartition, offset: int, deliveries: int) -> None:
        part = self._parts.setdefault(tp, _Partition())
        if deliveries > 0:
            part.pending[offset] = deliveries
        part.next_offset = max(part.next_offset, offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None or offset not in part.pending:
            return  # revoked meanwhile: its new owner re-delivers (a job read before
            # the revocation never gets here: the endpoint checks its generation)
        part.pending[offset] -= 1
        if part.pending[offset] == 0:
            del part.pending[offset]

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now (those that moved since the last `committed`)."""
        out: dict[TopicPartition, int] = {}
        for tp, part in self._parts.items():
            upto = min(part.pending) if part.pending else part.next_offset
            if upto > part.committed and upto > 0:
                out[tp] = upto
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Kafka took `offsets`: they are not offered again (a failed commit's are)."""
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = max(part.committed, offset)

    def idle(self) -> bool:
        return not any(part.pending for part in self._parts.values())

    def forget(self, tp: TopicPartition) -> None:
        self._parts.pop(tp, None)
