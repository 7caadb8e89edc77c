"""The facts the tables keep, and their compact JSON form.

Alerts are re-derived from facts on every change, so the facts must be complete
(every valid record, not a summary) and cheap to store: each fact serialises to a
flat JSON list with epoch-millisecond times, which is several times smaller and
faster to decode than a dict of RFC 3339 strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.common import format_utc

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(value: datetime) -> int:
    """Exact integer milliseconds (no float rounding) of an aware datetime.

    A datetime `from_ms` built is looked up (its hash is cached, the probe costs
    a fraction of the arithmetic): a derivation turns the facts' stored instants
    back into milliseconds for the slot's deadlines, closure and occupancy. Others
    (a record's time, a computed deadline) are computed; they are not memoised,
    as hashing a new aware datetime costs as much as the arithmetic.
    """
    known = _TO_MS.get(value)
    if known is None:
        return (value - _EPOCH) // _MS
    return known


_FROM_MS: dict[int, datetime] = {}
_TO_MS: dict[datetime, int] = {}
"""The reverse of `_FROM_MS`, emptied with it."""
_FROM_MS_MAX = 200_000


def from_ms(value: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds, memoised.

    Every slot decode turns the same stored instants into datetimes again, and
    building one costs several times a dict lookup. Sharing the (immutable)
    object also shares its cached hash, which `format_utc_cached` needs.
    """
    known = _FROM_MS.get(value)
    if known is None:
        if len(_FROM_MS) >= _FROM_MS_MAX:
            _FROM_MS.clear()
            _TO_MS.clear()
        known = _FROM_MS[value] = _EPOCH + timedelta(milliseconds=value)
        _TO_MS[known] = value
    return known


_FORMATTED: dict[datetime, str] = {}
_FORMATTED_MAX = 200_000


def format_utc_cached(value: datetime) -> str:
    """`schemas.common.format_utc`, memoised: the same deadlines and scan times are
    formatted again on every re-derivation of an order, and a dict probe of a time
    whose hash is cached costs a fraction of formatting it."""
    text = _FORMATTED.get(value)
    if text is None:
        if len(_FORMATTED) >= _FORMATTED_MAX:
            _FORMATTED.clear()
        text = _FORMATTED[value] = format_utc(value)
    return text


def _opt_ms(value: datetime | None) -> int | None:
    return None if value is None else to_ms(value)


# Not frozen (never mutated, but for the `encoded` cache): every slot decode builds
# all of an order's facts again, and a frozen dataclass's __init__ costs about four
# times a plain one.
@dataclass(slots=True)
class ScanFact:
    event_id: str
    stage: str
    action: str  # started | completed | rejected
    unit_id: str
    event_time: datetime
    quantity: float | None = None
    uom: str | None = None
    encoded: list[Any] | None = field(default=None, init=False, compare=False, repr=False)
    """`to_json()` once known (decoded, or encoded once): the order's slot encodes
    every fact again on every change, and a fact never changes."""

    def sort_key(self) -> tuple[datetime, str]:
        return (self.event_time, self.event_id)

    def to_json(self) -> list[Any]:
        if self.encoded is None:
            self.encoded = [
                self.event_id,
                self.stage,
                self.action,
                self.unit_id,
                to_ms(self.event_time),
                self.quantity,
                self.uom,
            ]
        return self.encoded


# Not frozen (never mutated, but for the `encoded` cache): every slot decode builds
# all of an order's facts again, and a frozen dataclass's __init__ costs about four
# times a plain one.
@dataclass(slots=True)
class OrderRecordFact:
    """One `orders` record; `offset` is its log offset, the tie-break of the fold."""

    op: str  # created | updated | cancelled
    event_time: datetime
    offset: int
    customer_id: str | None = None
    product: str | None = None
    quantity: float | None = None
    placed_at: datetime | None = None
    due_at: datetime | None = None
    route: tuple[str, ...] | None = None
    encoded: list[Any] | None = field(default=None, init=False, compare=False, repr=False)
    """`to_json()` once known, as `ScanFact.encoded`."""

    def sort_key(self) -> tuple[datetime, int]:
        return (self.event_time, self.offset)

    def to_json(self) -> list[Any]:
        if self.encoded is None:
            self.encoded = [
                self.op,
                to_ms(self.event_time),
                self.offset,
                self.customer_id,
                self.product,
                self.quantity,
                _opt_ms(self.placed_at),
                _opt_ms(self.due_at),
                None if self.route is None else list(self.route),
            ]
        return self.encoded


@dataclass(frozen=True, slots=True)
class CustomerFact:
    customer_id: str
    name: str | None
    tier: str

    def to_json(self) -> list[Any]:
        return [self.customer_id, self.name, self.tier]

    @classmethod
    def from_json(cls, data: list[Any]) -> CustomerFact:
        return cls(*data)


@dataclass(frozen=True, slots=True)
class DowntimeRecord:
    """One `unit-status` record (up, down or degraded)."""

    event_id: str
    unit_id: str
    stage: str | None
    status: str  # up | down | degraded
    reason: str | None
    event_time: datetime

    def sort_key(self) -> tuple[datetime, str]:
        return (self.event_time, self.event_id)

    def to_json(self) -> list[Any]:
        return [
            self.event_id,
            self.unit_id,
            self.stage,
            self.status,
            self.reason,
            to_ms(self.event_time),
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> DowntimeRecord:
        event_id, unit_id, stage, status, reason, ms = data
        return cls(event_id, unit_id, stage, status, reason, from_ms(ms))


@dataclass(slots=True)
class OrderFacts:
    """Everything known about one order: its records and its de-duplicated scans.

    Lists are kept in arrival order; every rule sorts them itself, so the result
    does not depend on the order in which topics were interleaved.
    """

    order_id: str
    records: list[OrderRecordFact] = field(default_factory=list)
    scans: list[ScanFact] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "o": self.order_id,
            "r": [r.to_json() for r in self.records],
            # a scan decoded or encoded before has its form: no call per scan for it
            "s": [s.encoded or s.to_json() for s in self.scans],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrderFacts:
        return cls(
            data["o"],
            records_from_json(data["r"]),
            scans_from_json(data["s"]),
        )


_new = object.__new__


def scans_from_json(encoded: list[list[Any]]) -> list[ScanFact]:
    """The scans `ScanFact.to_json` encoded, in one loop, each fact's slots set directly:
    every slot decode builds every scan of the order again, and a call to a per-scan
    decoder and then to the dataclass's `__init__` per scan cost twice this."""
    known = _FROM_MS
    facts: list[ScanFact] = []
    for data in encoded:
        fact = _new(ScanFact)
        fact.event_id, fact.stage, fact.action, fact.unit_id, ms, fact.quantity, fact.uom = data
        at = known.get(ms)
        fact.event_time = from_ms(ms) if at is None else at
        fact.encoded = data
        facts.append(fact)
    return facts


def records_from_json(encoded: list[list[Any]]) -> list[OrderRecordFact]:
    """The order records `OrderRecordFact.to_json` encoded, as `scans_from_json` decodes
    scans."""
    known = _FROM_MS
    facts: list[OrderRecordFact] = []
    for data in encoded:
        fact = _new(OrderRecordFact)
        op, ms, offset, customer_id, product, quantity, placed, due, route = data
        fact.op, fact.offset, fact.customer_id, fact.product, fact.quantity = (
            op, offset, customer_id, product, quantity
        )  # fmt: skip
        at = known.get(ms)
        fact.event_time = from_ms(ms) if at is None else at
        fact.placed_at = None if placed is None else known.get(placed) or from_ms(placed)
        fact.due_at = None if due is None else known.get(due) or from_ms(due)
        fact.route = None if route is None else tuple(route)
        fact.encoded = data
        facts.append(fact)
    return facts


def has_scan(facts: OrderFacts, event_id: str) -> bool:
    """Whether a scan with `event_id` is a fact (a loop: `any()` over a generator
    costs twice as much, on every scan an order takes)."""
    for known in facts.scans:  # noqa: SIM110 (see the docstring)
        if known.event_id == event_id:
            return True
    return False


def add_scan(facts: OrderFacts, scan: ScanFact) -> bool:
    """Append a scan unless its `event_id` is already a fact (the first one wins)."""
    if has_scan(facts, scan.event_id):
        return False
    facts.scans.append(scan)
    return True


def add_record(facts: OrderFacts, record: OrderRecordFact) -> bool:
    """Append an order record unless one with the same log offset is already known.

    Redelivery after a restart replays the same offsets; skipping them keeps the
    fold (which ties on offset) free of duplicates.
    """
    if any(known.offset == record.offset for known in facts.records):
        return False
    facts.records.append(record)
    return True


def add_unit_status(records: list[DowntimeRecord], record: DowntimeRecord) -> bool:
    """Unit status records are de-duplicated by `event_id` like scans."""
    if any(known.event_id == record.event_id for known in records):
        return False
    records.append(record)
    return True
