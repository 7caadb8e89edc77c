"""Decoded order slots kept beside the order table, so a busy order is not decoded per step.

Decoding a slot (orjson, then building its facts) was ~6 % of a worker's CPU on
a 100k backlog (docs/performance-engine.md), and an order is read again on
every scan, join answer and deadline. The table stays the only truth:

- a kept slot is handed out only while the table holds the very value it was
  stored as (the same object, else equal bytes). Whatever else writes the table
  (changelog recovery, a standby taking over, a rebalance) changes that value,
  so a kept slot is never stale;
- `take` removes the slot: the step that uses it owns it and mutates it in
  place. Only after the step stored the slot does `keep` put it back, so a step
  that raised half-way (a `processing_error`) leaves no half-applied slot
  behind: the next step decodes the stored value again;
- encoding is lossless (`OrderSlot.from_json` of the stored JSON equals the slot
  stored; tests/engine/test_slot_cache.py), so a kept slot is exactly what
  decoding its value would give, and the outputs do not depend on whether it
  was kept.

Bounded: the least recently stored orders are dropped past `capacity`
(~6 KB each in memory for a typical order). One per worker and agent set, no
global state.
"""

from __future__ import annotations

from collections import OrderedDict

from streams.engine.order_slot import OrderSlot


class SlotCache:
    """At most `capacity` decoded slots by order id, each with the value it was stored as."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._kept: OrderedDict[str, tuple[bytes, OrderSlot]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._kept)

    def take(self, order_id: str, raw: bytes | None) -> OrderSlot | None:
        """The slot stored as `raw` if kept, now owned by the caller (no longer kept)."""
        held = self._kept.pop(order_id, None)
        if held is not None and raw is not None and (held[0] is raw or held[0] == raw):
            self.hits += 1
            return held[1]
        self.misses += 1
        return None

    def keep(self, order_id: str, raw: bytes, slot: OrderSlot) -> None:
        """Keep `slot`, just stored in the table as `raw` and not to be changed after."""
        if self.capacity == 0:
            return
        kept = self._kept
        kept[order_id] = (raw, slot)
        kept.move_to_end(order_id)
        if len(kept) > self.capacity:
            kept.popitem(last=False)

    def forget(self, order_id: str) -> None:
        self._kept.pop(order_id, None)

    def clear(self) -> None:
        self._kept.clear()
