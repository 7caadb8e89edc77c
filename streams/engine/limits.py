"""How much the engine keeps per key (CONTRACT v1.2 "Bounded state").

Every table value must stay far below Kafka's message limit (1 MB by default)
whatever the number of records for its key, or the changelog write fails:

- an order keeps at most `max_scans_per_order` scans and `max_records_per_order`
  order records; a further one is a dead letter `state_limit` (a real order has
  tens of each);
- a unit keeps its latest `max_unit_records` status records (by event time, then
  event_id); older ones are folded away together with their `unit_down` /
  `unit_degraded` alerts, whose last published version is final. The kept set is
  the newest N of all records, so it does not depend on arrival order;
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
    closed_order_retention_ms: int = 30 * DAY_MS
    max_value_bytes: int = 900_000
    """A table value or output larger than this is a `processing_error`, never written."""
