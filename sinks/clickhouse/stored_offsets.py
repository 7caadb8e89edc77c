"""The sink's read-back of what a table already stores of one Kafka partition.

Before the first record of a newly assigned partition is buffered, the sink asks
each of the partition's tables which offsets at or after the committed one it
already holds, and skips them (exactly-once as seen by queries,
`sinks/clickhouse/sink.py`). It happens at every start and every rebalance, on a
store that grows for months, so it must stay cheap:
it reads the `kafka_positions` projection of the table (migration 0009: the
kafka columns sorted by topic, partition, offset), so it reads the partition's
granules from the offset on, not the whole table (no table's ORDER BY leads with
the kafka columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

MAX_SKIP_SET = 1_000_000
"""Offsets loaded per (table, partition) on assignment; beyond it only the maximum."""

READ_BACK_SETTINGS: dict[str, Any] = {}
"""Settings of the read-back query (its own, not the session's: inserts keep theirs)."""


class Querier(Protocol):
    def query(self, sql: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Stored:
    """Offsets of one (table, partition) already in ClickHouse when it was assigned."""

    offsets: frozenset[int] = frozenset()
    at_most: int = -1
    """Everything at or below is treated as stored (fallback for huge windows)."""

    @property
    def empty(self) -> bool:
        return not self.offsets and self.at_most < 0

    def has(self, offset: int) -> bool:
        return offset <= self.at_most or offset in self.offsets


def read_stored(client: Querier, table: str, topic: str, partition: int, since: int) -> Stored:
    """The offsets at or after `since` that `table` holds of (`topic`, `partition`).

    One query; it raises what the client raises."""
    sql = (
        f"SELECT count(), max(kafka_offset), "  # noqa: S608 - a table constant
        f"groupUniqArray({MAX_SKIP_SET})(kafka_offset) FROM {table} "
        "WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:Int32} "
        "AND kafka_offset >= {since:Int64}"
    )
    values = {"topic": topic, "partition": partition, "since": since}
    result = client.query(sql, parameters=values, settings=READ_BACK_SETTINGS)
    count, top, offsets = result.result_rows[0]
    if not count:
        return Stored()
    if len(offsets) < MAX_SKIP_SET:
        return Stored(offsets=frozenset(int(o) for o in offsets))
    return Stored(at_most=int(top))
