"""Unit downtimes from unit status records (RULES.md "Unit downtimes").

Each `down`/`degraded` record starts its own downtime and all of them end at the
first later `up`: a unit that reports `degraded` then `down` then `up` had two
disruptions, and both were over when it came back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from streams.rules.facts import DowntimeRecord


@dataclass(frozen=True, slots=True)
class Downtime:
    unit_id: str
    stage: str | None
    kind: str  # down | degraded
    reason: str | None
    start: datetime
    end: datetime | None
    event_id: str

    def sort_key(self) -> tuple[datetime, str]:
        return (self.start, self.event_id)

    def overlaps(self, start: datetime | None, end: datetime | None) -> bool:
        """RULES.md overlap: open ends are infinite; an unknown start counts as the end."""
        if start is None:
            start = end
        if start is None:  # a visit with neither start nor end does not exist
            return False
        starts_before_downtime_ends = self.end is None or start < self.end
        downtime_starts_before_end = end is None or self.start < end
        return starts_before_downtime_ends and downtime_starts_before_end


def build_downtimes(records: Iterable[DowntimeRecord]) -> list[Downtime]:
    """Records of one or many units -> their downtimes, sorted by (start, event_id)."""
    result: list[Downtime] = []
    pending: dict[str, list[DowntimeRecord]] = {}
    for record in sorted(records, key=DowntimeRecord.sort_key):
        if record.status == "up":
            for opened in pending.pop(record.unit_id, []):
                result.append(_downtime(opened, record.event_time))
        elif record.status in ("down", "degraded"):
            pending.setdefault(record.unit_id, []).append(record)
    for opened_list in pending.values():
        result.extend(_downtime(opened, None) for opened in opened_list)
    result.sort(key=Downtime.sort_key)
    return result


def _downtime(record: DowntimeRecord, end: datetime | None) -> Downtime:
    return Downtime(
        record.unit_id,
        record.stage,
        record.status,
        record.reason,
        record.event_time,
        end,
        record.event_id,
    )
