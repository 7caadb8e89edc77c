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
- on a server, the server stops it at `READ_BACK_MAX_EXECUTION_S`, before the
  client's request deadline (`connection.WRITE_DEADLINE_S`) cuts it: the server's
  work ends with it (`timeout_overflow_mode = 'throw'`: never an answer from the
  part read by then), and the failure is `read_cut`, which the sink logs as a slow
  read (with what to do) rather than as ClickHouse being unreachable. A request the
  client's deadline cuts is the server not answering at all (one that honours its
  limit answers before): an outage, like an unreachable server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sinks.clickhouse.connection import WRITE_DEADLINE_S, server_code
from sinks.clickhouse.deadline_pool import deadlines_of
from sinks.errors import SinkError

MAX_SKIP_SET = 1_000_000
"""Offsets loaded per (table, partition) on assignment; beyond it only the maximum."""

READ_BACK_MAX_EXECUTION_S = int(WRITE_DEADLINE_S) - 20
"""The server's limit on one read-back query (`max_execution_time`, 100 s), below the
client's request deadline (`WRITE_DEADLINE_S`, 120 s) by a margin for the answer to
travel, so the server stops its own work (TIMEOUT_EXCEEDED) before the client abandons
the request and leaves the query running - and as close to it as that allows: a read of
parts the projection does not cover yet (right after an upgrade, read as a whole) that
took 100-120 s now fails and is retried until the build is done, one that took less
still passes. Through the projection a partition's offsets take milliseconds. Only a
server client gets it: chDB has no request deadline to come first, and a limit would only
turn a slow read into one retried for ever."""

READ_BACK_SETTINGS: dict[str, Any] = {"optimize_use_projections": 1}
"""Settings of every read-back query (its own, not the session's: inserts keep theirs):
the projection is used also where a server's profile turns projections off."""

TIMEOUT_CODES = frozenset({159, 160})
"""TIMEOUT_EXCEEDED (`max_execution_time` passed) and TOO_SLOW (the server estimated
that the query would pass it, and stopped it early)."""


def slow_read_fix(table: str) -> str:
    """What an operator can do about a read-back of `table` that keeps being cut (the log
    line's `fix`). A build of the projection that was killed, or failed for good, leaves
    the parts stored before migration 0009 without it for ever (read in full at every
    read-back, and they never merge with newer parts), and `chainwatch db migrate` does
    not build it again (0009 is recorded): the line says how to queue it again."""
    return (
        "the read of the offsets a table already holds is cut before any record of the "
        "partition is stored; it reads the kafka_positions projection, built for the "
        "rows stored before migration 0009 by a mutation: check that system.mutations "
        f"has none of table {table} left with is_done = 0 (parts_to_do, "
        "latest_fail_reason; on a cluster clusterAllReplicas('<cluster>', "
        "system.mutations)); if none is left but parts lack the projection "
        "(system.parts.projections), its build was killed or failed: queue it again with "
        f"`ALTER TABLE {table} MATERIALIZE PROJECTION kafka_positions SETTINGS "
        f"mutations_sync = 0` ({table}_local ON CLUSTER '<cluster>' on a cluster) and "
        "kill only a duplicate of it; run `chainwatch db migrate` if the table has no "
        "kafka_positions projection, and check the server's load"
    )


def read_back_settings(client: object) -> dict[str, Any]:
    """`READ_BACK_SETTINGS`, and for a client with a request deadline (a server's; a
    `SerializedClient` or the clickhouse-connect client itself) the server's own limit
    below it (`READ_BACK_MAX_EXECUTION_S`), which fails the read when it passes
    (`timeout_overflow_mode = 'throw'`): a server profile's `'break'` would return what
    was read by then, an aggregate of part of the table, fewer offsets than stored (their
    records stored again) or no row at all."""
    if deadlines_of(getattr(client, "client", client)) is None:
        return dict(READ_BACK_SETTINGS)
    return {
        **READ_BACK_SETTINGS,
        "max_execution_time": READ_BACK_MAX_EXECUTION_S,
        "timeout_overflow_mode": "throw",
    }


class ReadBackMalformed(SinkError):
    """A read-back's answer is not the one row of three values its query always gives
    (an aggregate without GROUP BY): nothing can be known of what is stored, so the sink
    treats it as a failed read and retries, never as nothing stored."""


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

    One query, under `read_back_settings`; it raises what the client raises (`read_cut`
    tells a read the server stopped from an unreachable server)."""
    sql = (
        f"SELECT count(), max(kafka_offset), "  # noqa: S608 - a table constant
        f"groupUniqArray({MAX_SKIP_SET})(kafka_offset) FROM {table} "
        "WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:Int32} "
        "AND kafka_offset >= {since:Int64}"
    )
    values = {"topic": topic, "partition": partition, "since": since}
    result = client.query(sql, parameters=values, settings=read_back_settings(client))
    rows = result.result_rows
    if len(rows) != 1 or len(rows[0]) != 3:
        raise ReadBackMalformed(
            f"the read of the offsets {table} holds of {topic}[{partition}] answered "
            f"{len(rows)} rows ({str(rows)[:80]}), not one of 3 values: a server setting "
            "that cuts a query short (timeout_overflow_mode = 'break' or the like)?"
        )
    count, top, offsets = rows[0]
    if not count:
        return Stored()
    if len(offsets) < MAX_SKIP_SET:
        return Stored(offsets=frozenset(int(o) for o in offsets))
    return Stored(at_most=int(top))


def read_cut(exc: BaseException) -> bool:
    """Whether the server stopped a read-back for taking too long (`TIMEOUT_CODES`),
    rather than ClickHouse not being reached, not answering or refusing it."""
    return server_code(exc) in TIMEOUT_CODES
