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
  `max_unit_records + 1` records); a record older than the fold horizon is a
  dead letter `state_limit` too (its downtime was folded away);
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
    closed_order_retention_ms: int = 30 * DAY_MS
    max_value_bytes: int = 900_000
    """A table value or output larger than this is a `processing_error`, never written."""
