"""One unit's side of the unit -> order join, and its own alerts (pure, no Kafka).

A unit keeps its status records (the facts of its downtimes) and, per order
that visited it, the visits as the order last reported them (its occupancy).
From both it answers each order with the downtimes that overlap the order's
visits there — only when that answer changes, so a breakdown reaches the
orders it touched, not every order the unit ever saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from schemas.plan import SlaPlan
from streams.engine.limits import EngineLimits
from streams.engine.messages import DowntimeAnswer, Occupancy
from streams.engine.order_slot import downtime_to_json
from streams.rules.diff import alert_changes, alert_json
from streams.rules.downtimes import Downtime, build_downtimes
from streams.rules.evaluate import evaluate_unit
from streams.rules.facts import DowntimeRecord, add_unit_status, from_ms, to_ms


@dataclass(slots=True)
class UnitSlot:
    unit_id: str
    records: list[DowntimeRecord] = field(default_factory=list)
    """The newest `max_unit_records` status records (streams.engine.limits)."""
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_progress: dict[str, list[str]] = field(default_factory=dict)
    """downtime event_id -> orders whose visits overlap it (for `unit_down` details)."""
    accepted: int = 0
    """Status records ever taken in (folded ones included): the answers' version."""
    floor: tuple[int, str] | None = None
    """(event_time ms, event_id) of the newest record folded away; older ones are ignored."""

    @property
    def version(self) -> int:
        return self.accepted

    def floor_ms(self) -> int | None:
        return None if self.floor is None else self.floor[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "u": self.unit_id,
            "r": [r.to_json() for r in self.records],
            "a": self.published,
            "ip": self.in_progress,
            "n": self.accepted,
            "fl": None if self.floor is None else list(self.floor),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitSlot:
        floor = data.get("fl")
        return cls(
            data["u"],
            [DowntimeRecord.from_json(r) for r in data["r"]],
            data["a"],
            data["ip"],
            data.get("n", len(data["r"])),
            None if floor is None else (floor[0], floor[1]),
        )

    @staticmethod
    def published_of(raw: bytes) -> dict[str, dict[str, Any]]:
        """The alerts a stored unit value published (recovery announces them again)."""
        published: dict[str, dict[str, Any]] = orjson.loads(raw)["a"]
        return published

    def add(self, record: DowntimeRecord, limit: int) -> bool:
        """Take in a status record unless known or older than the fold horizon.

        Beyond `limit` records the oldest are folded away with their alerts and
        in-progress lists; the kept set is the newest `limit` of all records
        seen, whatever their arrival order.
        """
        key = (to_ms(record.event_time), record.event_id)
        if self.floor is not None and key <= self.floor:
            return False
        if not add_unit_status(self.records, record):
            return False
        self.accepted += 1
        if len(self.records) > limit:
            self.records.sort(key=DowntimeRecord.sort_key)
            dropped, self.records = self.records[:-limit], self.records[-limit:]
            last = dropped[-1]
            self.floor = (to_ms(last.event_time), last.event_id)
            gone = {r.event_id for r in dropped}
            for event_id in gone:
                self.in_progress.pop(event_id, None)
            for alert_id in [
                a for a, body in self.published.items() if body["details"].get("event_id") in gone
            ]:
                del self.published[alert_id]
        return True


@dataclass(slots=True)
class OccupancyEntry:
    """An order's visits at one unit, and the last downtime answer sent to it."""

    version: int
    visits: list[list[Any]]
    answered: list[list[Any]] | None = None

    def to_json(self) -> list[Any]:
        return [self.version, self.visits, self.answered]

    @classmethod
    def from_json(cls, data: list[Any]) -> OccupancyEntry:
        return cls(data[0], data[1], data[2])


@dataclass(slots=True)
class UnitEffects:
    answers: list[DowntimeAnswer] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    changed_entries: dict[str, OccupancyEntry] = field(default_factory=dict)


def _overlapping(downtimes: Iterable[Downtime], visits: list[list[Any]]) -> list[Downtime]:
    spans = [
        (None if v[2] is None else from_ms(v[2]), None if v[3] is None else from_ms(v[3]))
        for v in visits
    ]
    return [d for d in downtimes if any(d.overlaps(start, end) for start, end in spans)]


class UnitProcessor:
    def __init__(self, plan: SlaPlan, limits: EngineLimits | None = None) -> None:
        self.plan = plan
        self.limits = limits or EngineLimits()

    def on_status(
        self,
        slot: UnitSlot,
        record: DowntimeRecord,
        occupancy: Mapping[str, OccupancyEntry],
        now: datetime,
    ) -> UnitEffects:
        """A status record: new downtimes, answers to every order they touch, unit alerts."""
        # A known event_id changes no fact, but it is re-applied as a whole: on a
        # redelivery after a crash the slot may have been kept while the answers
        # it caused were lost, and every answer is idempotent (versioned).
        redelivered = not slot.add(record, self.limits.max_unit_records)
        downtimes = build_downtimes(slot.records)
        effects = UnitEffects()
        before, slot.in_progress = slot.in_progress, {}
        for order_id in sorted(occupancy):
            entry = occupancy[order_id]
            touching = _overlapping(downtimes, entry.visits)
            for d in touching:
                slot.in_progress.setdefault(d.event_id, []).append(order_id)
            self._answer(slot, order_id, entry, touching, effects, again=redelivered)
        # Only the alerts this record can change are derived again: its own downtime,
        # the downtimes it ends (an `up`), and those whose orders in progress changed.
        at = record.event_time
        affected = {
            d.event_id
            for d in downtimes
            if d.event_id == record.event_id or (d.start <= at and (d.end is None or d.end >= at))
        }
        affected.update(
            e for e in before.keys() | slot.in_progress.keys()
            if before.get(e) != slot.in_progress.get(e)
        )  # fmt: skip
        effects.alerts = self._alerts(slot, downtimes, now, affected)
        return effects

    def on_occupancy(
        self, slot: UnitSlot, message: Occupancy, entry: OccupancyEntry | None, now: datetime
    ) -> UnitEffects:
        """An order reports its visits here: answer it if its downtimes changed."""
        effects = UnitEffects()
        if entry is not None and message.version < entry.version:
            return effects  # overtaken by a newer report of the same order
        # the same version again is a redelivery (or a rejoin): re-applied, answer re-sent
        again = entry is not None and message.version == entry.version
        entry = OccupancyEntry(message.version, message.visits, entry.answered if entry else None)
        order_id = message.order_id
        downtimes = build_downtimes(slot.records)
        touching = _overlapping(downtimes, entry.visits)
        touched_ids = {d.event_id for d in touching}
        changed_progress: set[str] = set()
        for d in downtimes:
            orders = slot.in_progress.get(d.event_id, [])
            present = order_id in orders
            if (d.event_id in touched_ids) != present:
                changed_progress.add(d.event_id)
                orders = sorted({*orders, order_id} if not present else set(orders) - {order_id})
                if orders:
                    slot.in_progress[d.event_id] = orders
                else:
                    slot.in_progress.pop(d.event_id, None)
        self._answer(slot, order_id, entry, touching, effects, again=again)
        effects.changed_entries[order_id] = entry
        if changed_progress:
            effects.alerts = self._alerts(slot, downtimes, now, changed_progress)
        return effects

    def _answer(
        self,
        slot: UnitSlot,
        order_id: str,
        entry: OccupancyEntry,
        touching: list[Downtime],
        effects: UnitEffects,
        *,
        again: bool = False,
    ) -> None:
        body = [downtime_to_json(d) for d in touching]
        if entry.answered is None and not body:
            return
        if entry.answered == body and not again:
            return
        entry.answered = body
        effects.changed_entries[order_id] = entry
        effects.answers.append(
            DowntimeAnswer(
                order_id, slot.unit_id, (slot.version, entry.version), body, slot.floor_ms()
            )
        )

    def _alerts(
        self, slot: UnitSlot, downtimes: list[Downtime], now: datetime, affected: set[str]
    ) -> list[dict[str, Any]]:
        """The changes among the alerts of the `affected` downtimes (by event_id)."""
        chosen = [d for d in downtimes if d.event_id in affected]
        desired: dict[str, dict[str, Any]] = {}
        for key, alert in evaluate_unit(slot.unit_id, chosen, self.plan, now).items():
            body = alert_json(alert)
            event_id = body["details"].get("event_id")
            body["details"]["orders_in_progress"] = slot.in_progress.get(event_id, [])
            desired[key] = body
        mine = [
            key
            for key, have in slot.published.items()
            if have["details"].get("event_id") in affected
        ]
        changes, _ = alert_changes(slot.published, desired, among=mine)
        for body in changes:
            slot.published[body["alert_id"]] = body
        return changes
