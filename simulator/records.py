"""The simulator's output unit, and the fast text forms it is written in.

A `SimRecord` carries its value already serialised (compact JSON), because
the file writer, the Kafka producer and the HTTP batcher all want bytes, and
serialising once at generation keeps the in-flight orders small in memory.
Timestamps are formatted by hand: `datetime.isoformat` per event would be
the largest cost of a million-event run.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

MS_PER_S = 1000
MS_PER_MIN = 60 * MS_PER_S
MS_PER_H = 60 * MS_PER_MIN
MS_PER_DAY = 24 * MS_PER_H
_EPOCH = date(1970, 1, 1)


class SimRecord(NamedTuple):
    """One record to publish, in publication order.

    `at_ms` is the simulated publication time (epoch ms); it equals the
    value's `event_time` except for re-sent duplicates. `label` names the
    injected anomaly the record embodies (None for ordinary traffic); `valid`
    is the simulator's claim about `schemas.validation.decode_input`. A
    truncated record keeps only `cut` characters of its value: the file
    writer truncates the whole line there, live publishers send the bytes.
    A NamedTuple because a million of them are built per run: a frozen
    dataclass costs several times as much to construct.
    """

    topic: str
    key: str | None
    value: str | None
    at_ms: int
    label: str | None = None
    valid: bool = True
    cut: int | None = None

    def value_text(self) -> str | None:
        """The value as published (possibly truncated), None for a tombstone."""
        if self.value is None or self.cut is None:
            return self.value
        return self.value[: self.cut]

    def value_bytes(self) -> bytes | None:
        text = self.value_text()
        return None if text is None else text.encode()

    def key_bytes(self) -> bytes | None:
        return None if self.key is None else self.key.encode()

    def line(self) -> str:
        """The scenario line (CONTRACT.md, replay files), without the newline.

        A truncated record's line stops inside its value, so it is not JSON.
        """
        key = "null" if self.key is None else f'"{self.key}"'  # identifiers need no escaping
        value = self.value_text()
        head = f'{{"topic":"{self.topic}","key":{key},"value":'
        if value is None:
            return head + "null}"
        return head + value + ("" if self.cut is not None else "}")


def dumps(value: dict[str, Any]) -> str:
    """Compact JSON, as published (orjson: ten times the stdlib's speed, same text here)."""
    return orjson.dumps(value).decode()


@lru_cache(maxsize=4096)
def _date_text(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).isoformat()


def format_ms(ms: int, offset_min: int = 0, *, naive: bool = False) -> str:
    """RFC 3339 local time at a site's fixed offset, whole seconds (`...T10:15:00+05:30`).

    `naive=True` drops the offset: the invalid form the contract rejects.
    """
    local = ms + offset_min * MS_PER_MIN
    days, rem = divmod(local, MS_PER_DAY)
    hours, rem = divmod(rem, MS_PER_H)
    minutes, rem = divmod(rem, MS_PER_MIN)
    seconds = rem // MS_PER_S
    text = f"{_date_text(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}"
    if naive:
        return text
    if offset_min == 0:
        return text + "Z"
    sign = "+" if offset_min > 0 else "-"
    oh, om = divmod(abs(offset_min), 60)
    return f"{text}{sign}{oh:02d}:{om:02d}"
