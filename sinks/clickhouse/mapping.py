"""The contract between the sink and its row mappers.

A mapper turns one Kafka record into rows of one or more tables, purely (no
I/O), so it is unit-tested without Kafka or ClickHouse. Every row ends with the
record's `kafka_topic`, `kafka_partition`, `kafka_offset`: the sink relies on
them to skip what is already stored after a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka import ConsumerRecord

Row = tuple[Any, ...]
KAFKA_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset")


@dataclass(frozen=True)
class Table:
    """A target table and the columns a mapper fills, in row order."""

    name: str
    columns: tuple[str, ...]

    @classmethod
    def of(cls, name: str, *columns: str) -> Table:
        return cls(name, (*columns, *KAFKA_COLUMNS))


class RecordInvalid(Exception):
    """The record breaks the contract: skipped and counted, never a crash.

    Invalid *input* records are dead-lettered by the engine, not by the sink;
    invalid *output* records (alerts, snapshots) would be an engine bug.
    """


class RecordForwarded(Exception):
    """A keyless input record read from another partition than its id's: skipped, counted
    apart (a keyed one is `RecordInvalid`: the engine's dead letter).

    The engine forwards a copy to its id's partition (`schemas.placement`); the copy's
    rows are stored, so storing the original's too would count the record twice (and
    a customer version would race the copy's). Valid input, so not `RecordInvalid`.
    """


class RecordMapper(Protocol):
    """Maps the records of one topic; `tables` lists every table it may fill."""

    @property
    def tables(self) -> Sequence[Table]: ...

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        """Rows per table name (tables without rows may be absent); raises `RecordInvalid`
        or `RecordForwarded`."""
        ...


def kafka_coordinates(record: ConsumerRecord[bytes, bytes]) -> Row:
    return (record.topic, record.partition, record.offset)


def compact_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
