"""The unit side of the engine: unit status records and the orders that visit a unit.

A unit keeps its (bounded) status records and, per order, the visits the order
reported (its occupancy, one table value per unit and order). From both it
answers the orders whose visits its downtimes touch, and derives its own
`unit_down` / `unit_degraded` alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from schemas.unit_status import UnitStatus
from streams.engine.messages import UNIT_INBOX, Occupancy, decode_unit_inbox
from streams.engine.occupancy_index import IndexedEntries, OccupancyIndex, decode_entry
from streams.engine.runtime import RECOVERY_FLUSH_EVERY, EngineRuntime, as_rejected
from streams.engine.unit_processor import (
    OccupancyEntry,
    StoredEntries,
    UnitEffects,
    UnitProcessor,
    UnitSlot,
)
from streams.rules.facts import from_ms, to_ms
from streams.rules.record_facts import unit_status_fact
from streams.topics import UNIT_STATUS


class UnitAgents:
    def __init__(self, rt: EngineRuntime) -> None:
        self.rt = rt
        self.units = UnitProcessor(rt.plan, rt.config.limits)
        self._index: OccupancyIndex | None = None
        """unit_id -> orders with an occupancy entry there, and what a status record
        needs to know of each entry: kept in step with the occupancy table."""

    def index(self) -> OccupancyIndex:
        if self._index is None:
            self.rebuild_index()
        assert self._index is not None
        return self._index

    def entry(self, unit_id: str, order_id: str) -> OccupancyEntry | None:
        raw = self.rt.get(self.rt.occupancy_table, f"{unit_id}|{order_id}")
        return None if raw is None else decode_entry(raw)

    def load(self, unit_id: str) -> UnitSlot:
        raw = self.rt.get(self.rt.unit_table, unit_id)
        return UnitSlot(unit_id) if raw is None else UnitSlot.from_json(orjson.loads(raw))

    def entries(self, unit_id: str) -> dict[str, OccupancyEntry]:
        """Every stored occupancy entry of the unit, frozen ones included."""
        entries: dict[str, OccupancyEntry] = {}
        for order_id in self.index().of(unit_id):
            entry = self.entry(unit_id, order_id)
            if entry is not None:
                entries[order_id] = entry
        return entries

    def stored(self, unit_id: str) -> StoredEntries:
        """The unit's entries for a status record: decoded only where they can matter."""
        return IndexedEntries(
            self.index().of(unit_id), lambda order_id: self.entry(unit_id, order_id)
        )

    def apply(self, slot: UnitSlot, effects: UnitEffects, store: bool) -> None:
        """Store first, then send (as the order side); every value is encoded before any write."""
        rt = self.rt
        entries = {
            f"{slot.unit_id}|{order_id}": rt.encoded(entry.to_json())
            for order_id, entry in effects.changed_entries.items()
        }
        unit = rt.encoded(slot.to_json()) if store or effects.alerts else None
        for key, value in entries.items():
            rt.put(rt.occupancy_table, key, value)
        for order_id in effects.forgotten:
            rt.delete(rt.occupancy_table, f"{slot.unit_id}|{order_id}")
        self.index().update(slot.unit_id, effects.changed_entries, effects.forgotten)
        if unit is not None:
            rt.put(rt.unit_table, slot.unit_id, unit)
        for answer in effects.answers:
            rt.join(rt.out.order_inbox, answer)
        rt.send_alerts(effects.alerts)

    async def on_statuses(self, events: Sequence[Any]) -> None:
        await self.rt.each(UNIT_STATUS, events, self.on_status)

    async def on_inbox(self, events: Sequence[Any]) -> None:
        """The orders' reports (bundles), grouped per unit (each unit's in log order): see
        `_reports`. A corrupt bundle is dead-lettered (`processing_error`)."""
        groups: dict[str, list[tuple[Any, Occupancy]]] = {}
        for event, occ in await self.rt.unbundled(UNIT_INBOX, events, decode_unit_inbox):
            groups.setdefault(occ.unit_id, []).append((event, occ))
        for items in groups.values():
            await self.rt.guarded(UNIT_INBOX, items, self._reports, lambda item: item[0].message)

    async def on_status(self, event: Any) -> None:
        rt = self.rt
        message, value = event.message, event.value
        if not isinstance(value, UnitStatus):
            rt.dead_letter(UNIT_STATUS, message, as_rejected(value))
        elif not rt.diverted(UNIT_STATUS, message, value):
            now_ms = rt.clock.observe(message.partition, to_ms(value.event_time))
            slot = self.load(value.unit_id)
            effects = self.units.on_status(
                slot, unit_status_fact(value), self.stored(value.unit_id), from_ms(now_ms),
                rt.source(UNIT_STATUS, message), message.value,
            )  # fmt: skip
            self.apply(slot, effects, store=effects.changed)
            rt.send_dead_letters(effects.dead_letters)

    async def _reports(self, items: Sequence[tuple[Any, Occupancy]]) -> None:
        """One unit's reports of a batch: its slot loaded, derived and stored once."""
        rt = self.rt
        event = items[-1][0]
        unit_id = items[0][1].unit_id
        messages = [occ for _, occ in items]
        with rt.acting_for(event):
            entries: dict[str, OccupancyEntry | None] = {}
            for occ in messages:
                if occ.order_id not in entries:
                    entries[occ.order_id] = self.entry(unit_id, occ.order_id)
            slot = self.load(unit_id)
            now = from_ms(rt.clock.now(event.message.partition))
            effects = self.units.on_occupancies(
                slot, messages, entries, now, lambda: self.entries(unit_id), _positions(items)
            )
            self.apply(slot, effects, store=effects.changed)

    async def on_units_recovered(self) -> None:
        """Announce the alerts of the units this worker owns again (as the order side)."""
        rt = self.rt
        async with rt.turn:
            mine = rt.active_partitions(rt.unit_status_topic)
            for unit_id, raw in list(rt.unit_table.items()):
                if rt.partition_of(unit_id) in mine:
                    rt.send_alerts(UnitSlot.published_of(raw).values(), reannounce=True)
                    if rt.outputs.pending >= RECOVERY_FLUSH_EVERY:
                        await rt.outputs.flush()
            await rt.outputs.flush()

    async def on_occupancy_recovered(self) -> None:
        self.rebuild_index()

    def rebuild_index(self) -> None:
        """Every entry decoded once (after a recovery: the table was written without us)."""
        self._index = OccupancyIndex.rebuild(list(self.rt.occupancy_table.items()))


def _positions(items: Sequence[tuple[Any, Occupancy]]) -> list[tuple[int, int]]:
    """Each report's [offset, index in its bundle] in the unit inbox: one Kafka message
    carries a bundle of reports (streams.engine.messages)."""
    positions: list[tuple[int, int]] = []
    for n, (event, _) in enumerate(items):
        offset = event.message.offset
        same = n > 0 and items[n - 1][0].message.offset == offset
        positions.append((offset, positions[-1][1] + 1 if same else 0))
    return positions
