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

from schemas.alerts import AlertStatus
from schemas.plan import SlaPlan
from streams.engine.messages import DowntimeAnswer, Occupancy
from streams.engine.order_slot import downtime_to_json
from streams.rules.downtimes import Downtime, build_downtimes
from streams.rules.evaluate import evaluate_unit
from streams.rules.facts import DowntimeRecord, add_unit_status, from_ms


@dataclass(slots=True)
class UnitSlot:
    unit_id: str
    records: list[DowntimeRecord] = field(default_factory=list)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_progress: dict[str, list[str]] = field(default_factory=dict)
    """downtime event_id -> orders whose visits overlap it (for `unit_down` details)."""

    @property
    def version(self) -> int:
        return len(self.records)

    def to_json(self) -> dict[str, Any]:
        return {
            "u": self.unit_id,
            "r": [r.to_json() for r in self.records],
            "a": self.published,
            "ip": self.in_progress,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitSlot:
        return cls(
            data["u"],
            [DowntimeRecord.from_json(r) for r in data["r"]],
            data["a"],
            data["ip"],
        )


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
    def __init__(self, plan: SlaPlan) -> None:
        self.plan = plan

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
        redelivered = not add_unit_status(slot.records, record)
        downtimes = build_downtimes(slot.records)
        effects = UnitEffects()
        slot.in_progress = {}
        for order_id in sorted(occupancy):
            entry = occupancy[order_id]
            touching = _overlapping(downtimes, entry.visits)
            for d in touching:
                slot.in_progress.setdefault(d.event_id, []).append(order_id)
            self._answer(slot, order_id, entry, touching, effects, again=redelivered)
        effects.alerts = self._alerts(slot, downtimes, now)
        return effects

    def on_occupancy(
        self, slot: UnitSlot, message: Occupancy, entry: OccupancyEntry | None, now: datetime
    ) -> UnitEffects:
        """An order reports its visits here: answer it if its downtimes changed."""
        effects = UnitEffects()
        if entry is not None and message["v"] < entry.version:
            return effects  # overtaken by a newer report of the same order
        # the same version again is a redelivery (or a rejoin): re-applied, answer re-sent
        again = entry is not None and message["v"] == entry.version
        entry = OccupancyEntry(message["v"], message["visits"], entry.answered if entry else None)
        order_id = message["o"]
        downtimes = build_downtimes(slot.records)
        touching = _overlapping(downtimes, entry.visits)
        touched_ids = {d.event_id for d in touching}
        changed_progress = False
        for d in downtimes:
            orders = slot.in_progress.get(d.event_id, [])
            present = order_id in orders
            if (d.event_id in touched_ids) != present:
                changed_progress = True
                orders = sorted({*orders, order_id} if not present else set(orders) - {order_id})
                if orders:
                    slot.in_progress[d.event_id] = orders
                else:
                    slot.in_progress.pop(d.event_id, None)
        self._answer(slot, order_id, entry, touching, effects, again=again)
        effects.changed_entries[order_id] = entry
        if changed_progress:
            effects.alerts = self._alerts(slot, downtimes, now)
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
            {
                "k": "downtimes",
                "o": order_id,
                "u": slot.unit_id,
                "v": [slot.version, entry.version],
                "d": body,
            }
        )

    def _alerts(
        self, slot: UnitSlot, downtimes: list[Downtime], now: datetime
    ) -> list[dict[str, Any]]:
        desired: dict[str, dict[str, Any]] = {}
        for key, alert in evaluate_unit(slot.unit_id, downtimes, self.plan, now).items():
            body = alert.model_dump(mode="json")
            event_id = body["details"].get("event_id")
            body["details"]["orders_in_progress"] = slot.in_progress.get(event_id, [])
            desired[key] = body
        changes: list[dict[str, Any]] = []
        for key in sorted(desired.keys() | slot.published.keys()):
            want, have = desired.get(key), slot.published.get(key)
            if want is not None and want != have:
                changes.append(want)
            elif want is None and have is not None and have["status"] != AlertStatus.RETRACTED:
                changes.append({**have, "status": AlertStatus.RETRACTED.value})
        for body in changes:
            slot.published[body["alert_id"]] = body
        return changes
