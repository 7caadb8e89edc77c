"""How much the engine keeps per key (CONTRACT v1.2 "Bounded state").

Every table value must stay far below Kafka's message limit (1 MB by default)
whatever the number of records for its key, or the changelog write fails:

- an order keeps at most `max_scans_per_order` scans and `max_records_per_order`
  order records; a further one is a dead letter `state_limit` (a real order has
  tens of each);
- a unit keeps the status records a visit may still need. After each record it
  folds away the oldest downtimes that ended at or before its fold horizon: the
  earliest visit of the orders it knows (an unknown start counts as the visit's
  end), and at the latest `unit_lookback_ms` before the unit's own clock (the
  largest event_time among its records), for the visits of orders whose scans
  have not reached it yet. Folded records go with their `unit_down` /
  `unit_degraded` alerts, whose last published version is final. What the unit
  keeps is therefore a function of its own status log (and, only for visits
  older than the lookback, of the visits it knows), not of the arrival order
  of scans and statuses: a visit that reaches the unit within the lookback
  finds every downtime it overlaps;
- beyond `max_unit_records` kept records a further status record is a dead
  letter `state_limit` (decided in the unit's log order, so deterministic),
  except the `up` that ends the unit's open downtime (at most
  `max_unit_records + 1` records) and, after a crash that lost its value and
  kept its occupancy entries, a record the lost steps read, up to the newest
  one that told an order (`OccupancyEntry.told_by`, `UnitSlot.lost_offset`):
  they may have taken it, so it is taken, over the limit by at most the records
  they read, until folds make room (one they refused keeps its dead letter); a
  record older than the fold horizon is a dead letter `state_limit` too (its
  downtime was folded away);
- a unit keeps an occupancy entry per order in the state that visited it, and a
  tombstone for each of the last `max_unit_left_orders` orders that left the state
  (evicted): an order that leaves is counted, per kept downtime its final visits
  overlap, in the unit's value (a count and the first ids; an order whose visit
  there never ended also in every downtime a later status record opens). Kept as
  frozen entries, they grew without bound while a downtime stayed open (an `up`
  never sent). The tombstone tells a forget or report that comes again
  (at-least-once) from a new one, so each order is counted once, as long as it
  comes again before `max_unit_left_orders` later orders left the unit (then it is
  counted twice; the order side sends a forget again only after a crash, within
  its uncommitted batches). A status record that comes after an order left
  (at least the retention late) does not count or uncount it;
- a closed order (completed or cancelled) is removed `closed_order_retention_ms`
  after it closed, on the engine's clock; a later record for it is a dead letter
  `order_closed`. A record whose event_time is past that instant is refused even
  if the order is not removed yet, so event-time replays decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class EngineLimits:
    max_scans_per_order: int = 300
    max_records_per_order: int = 100
    max_unit_records: int = 100
    unit_lookback_ms: int = 30 * DAY_MS
    """How late (in the unit's event time) a visit may reach its unit and still
    find every downtime it overlaps."""
    max_unit_left_orders: int = 1_000
    """How many tombstones of orders that left the state a unit keeps (the newest):
    a forget or report of an order that comes again after this many later orders
    left the unit counts the order twice (see the module docstring)."""
    closed_order_retention_ms: int = 30 * DAY_MS
    max_value_bytes: int = 900_000
    """A table value or output larger than this is a `processing_error`, never written."""
