"""The sink's read-back of what a table already stores of one Kafka partition.

Before the first record of a newly assigned partition is buffered, the sink asks
each of the partition's tables which offsets at or after the committed one it
already holds, and skips them (exactly-once as seen by queries,
`sinks/clickhouse/sink.py`). It happens at every start and every rebalance, on a
store that grows for months, so it must stay cheap and, when it cannot finish,
say so:

- it reads the `kafka_positions` projection of the table (migration 0009: the
  kafka columns sorted by topic, partition, offset), so it reads the partition's
  granules from the offset on, not the whole table (no table's ORDER BY leads
  with the kafka columns);
- the server stops it at `READ_BACK_MAX_EXECUTION_S`, before the client's request
  deadline (`connection.WRITE_DEADLINE_S`) cuts it: the server's work ends
  with it, and the failure is `read_cut`, which the sink logs as a slow read
  (with what to do) rather than as ClickHouse being unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sinks.clickhouse.connection import StoreDeadlinePassed, server_code

MAX_SKIP_SET = 1_000_000
"""Offsets loaded per (table, partition) on assignment; beyond it only the maximum."""

READ_BACK_MAX_EXECUTION_S = 60
"""The server's limit on one read-back query (`max_execution_time`), well below the
client's request deadline (`WRITE_DEADLINE_S`, 120 s), so the server stops its own work
(TIMEOUT_EXCEEDED) before the client abandons the request and leaves the query running.
Through the projection a partition's offsets take milliseconds; a read that needs a
minute scans parts the projection does not cover yet."""

READ_BACK_SETTINGS: dict[str, Any] = {"max_execution_time": READ_BACK_MAX_EXECUTION_S}
"""Settings of the read-back query (its own, not the session's: inserts keep theirs)."""

TIMEOUT_CODES = frozenset({159, 160})
"""TIMEOUT_EXCEEDED (`max_execution_time` passed) and TOO_SLOW (the server estimated
that the query would pass it, and stopped it early)."""

SLOW_READ_FIX = (
    "the read of the offsets a table already holds is cut before any record of the "
    "partition is stored; it reads the kafka_positions projection: run `chainwatch db "
    "migrate`, let its mutations finish (SELECT * FROM system.mutations WHERE NOT "
    "is_done), and check the server's load"
)
"""What an operator can do about a read-back that keeps being cut (the log line's `fix`)."""


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

    One query, under `READ_BACK_SETTINGS`; it raises what the client raises (`read_cut`
    tells a cut read from an unreachable server)."""
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


def read_cut(exc: BaseException) -> bool:
    """Whether a read-back failed because it took too long - the server stopped it
    (`TIMEOUT_CODES`) or the client's request deadline cut it - rather than because
    ClickHouse could not be reached or refused it."""
    return isinstance(exc, StoreDeadlinePassed) or server_code(exc) in TIMEOUT_CODES
