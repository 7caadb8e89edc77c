"""Silences: planned maintenance windows during which matching alerts are not sent.

A `Silence` lives on the compacted `webhook-silences` topic (key = its id), written by
`chainwatch silences add|expire`; every notifier process reads the whole topic and
follows it (silence_follower.py), so N notifiers see the same silences and none needs a
restart. A delivery is checked at the moment it would be sent (wall clock), and again
before each retry: a match is recorded `silenced` (the delivery log, with the silence's
id), never sent and never dead-lettered (docs/alert-channels.md, "Silencing during
maintenance"); once no silence covers it, an alert still open is sent then (dispatcher.py,
`EndpointPipe._release_held`).

Matching: every non-empty matcher must match (AND), a list matches any of its values
(OR), an empty list matches everything; at least one alert matcher (units, stages,
types, order_ids, customer_ids) is required, `endpoints` alone would silence every alert.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.alerts import Alert, AlertType
from schemas.common import Identifier, StageName, UtcDatetime
from sinks.webhooks.subscriptions import only_known

SILENCES_TOPIC = "webhook-silences"
MAX_SILENCES = 10_000
"""Silences a notifier keeps (expired ones dropped first), and `add` refuses beyond."""
MAX_SILENCE = timedelta(days=30)
MAX_REASON = 500
MAX_MATCHERS = 100
"""Values of one matcher list: a silence stays far below Kafka's record limit."""

_TYPES = frozenset(t.value for t in AlertType)

Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REASON)
]
EndpointName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


def _ms(value: datetime) -> datetime:
    """To the millisecond, as written on the topic: what is read back is the same."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def new_silence_id() -> str:
    return uuid.uuid4().hex


class Silence(BaseModel):
    """One maintenance window: which alerts, to which endpoints, from when to when, why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    silence_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] = Field(
        default_factory=new_silence_id
    )
    units: list[Identifier] = Field(default_factory=list, max_length=MAX_MATCHERS)
    """Matches `unit_id`, or the unit of the alert's `cause` (an order disrupted by it)."""
    stages: list[StageName] = Field(default_factory=list, max_length=MAX_MATCHERS)
    types: list[str] = Field(default_factory=list, max_length=MAX_MATCHERS)
    order_ids: list[Identifier] = Field(default_factory=list, max_length=MAX_MATCHERS)
    customer_ids: list[Identifier] = Field(default_factory=list, max_length=MAX_MATCHERS)
    endpoints: list[EndpointName] = Field(default_factory=list, max_length=MAX_MATCHERS)
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    reason: Reason
    created_by: Annotated[str, StringConstraints(max_length=64)] = ""
    created_at: UtcDatetime = Field(default_factory=lambda: _ms(datetime.now(UTC)))

    @field_validator("starts_at", "ends_at", "created_at")
    @classmethod
    def _to_ms(cls, value: datetime) -> datetime:
        return _ms(value)

    @field_validator("types")
    @classmethod
    def _known_types(cls, values: list[str]) -> list[str]:
        """A type no alert has (a typo) would silence nothing: refused, naming the types."""
        return only_known(values, _TYPES, "type")

    @model_validator(mode="after")
    def _bounded(self) -> Silence:
        if not (self.units or self.stages or self.types or self.order_ids or self.customer_ids):
            raise ValueError(
                "a silence needs at least one of units, stages, types, order_ids or "
                "customer_ids: a silence of every alert is refused"
            )
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.ends_at - self.starts_at > MAX_SILENCE:
            raise ValueError(f"a silence lasts at most {MAX_SILENCE.days} days")
        return self

    def expired(self, now: datetime) -> bool:
        return self.ends_at <= now

    def in_force(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, alert: Alert, endpoint: str) -> bool:
        """Whether the silence covers `alert` sent to `endpoint` (time not considered)."""
        customer = None if alert.customer is None else alert.customer.customer_id
        checks: tuple[tuple[list[str], Collection[str | None]], ...] = (
            (self.units, alert.units),
            (self.stages, (alert.stage,)),
            (self.types, (alert.type.value,)),
            (self.order_ids, (alert.order_id,)),
            (self.customer_ids, (customer,)),
            (self.endpoints, (endpoint,)),
        )
        return all(not wanted or any(v in wanted for v in values) for wanted, values in checks)


def silence_of_record(key: bytes | None, value: bytes) -> Silence:
    """The silence a record of the topic holds; `ValueError` (a `ValidationError` among
    them) for a value that is none, or one whose key is not its id. Written under another
    key, a silence outlived its `expire` and its tombstone (both go to its id's key): a
    running notifier dropped it, and one started later read it back in force, or not,
    by the order its two partitions were read in."""
    silence = Silence.model_validate_json(value)
    if key != silence.silence_id.encode():
        shown = None if key is None else key[:80]
        raise ValueError(f"silence {silence.silence_id} under the key {shown!r}: not its id")
    return silence


_ANCHORS = ("order_ids", "customer_ids", "units", "stages", "types")
"""The alert matchers a silence can be indexed by, the most selective first: every
silence has at least one (`Silence._bounded`); `endpoints` is not one (empty = all)."""


def _anchor(silence: Silence) -> tuple[str, list[str]]:
    """The matcher `silence` is indexed by: its first non-empty one in `_ANCHORS` order.
    An alert it covers has one of those values there (matchers AND together), so a
    look-up need only read the silences indexed under the alert's own values."""
    for matcher in _ANCHORS:
        values: list[str] = getattr(silence, matcher)
        if values:
            return matcher, values
    raise AssertionError("a silence without an alert matcher")  # refused by `_bounded`


class SilenceBook:
    """The silences one notifier knows, by id: the topic's latest value per key.

    At most `limit`: past it the expired ones are dropped first (those that ended first
    first); an expired silence never matches, so dropping it changes nothing. Should
    every one still be in force or ahead (only a race of `add`s gets there: `add` refuses
    beyond the bound), those ending first are dropped, and counted in `dropped_active`.

    Indexed by each silence's most selective matcher (`_anchor`): a look-up reads the
    silences that can cover the alert, not all of them. It walked all: 2-5 µs a
    silence, so at the bound of 10,000 every delivery's check took tens of ms and a
    rewritten silence made its held alerts' look-ups take minutes (docs/sinks.md)."""

    def __init__(self, limit: int = MAX_SILENCES) -> None:
        self.limit = limit
        self.silences: dict[str, Silence] = {}
        self._index: dict[str, dict[str, set[str]]] = {m: {} for m in _ANCHORS}
        self.dropped_active = 0
        self.version = 0
        """Bumped by every `put`: a notifier looks again at what it holds only once the
        book changed (or a silence holding one ended), dispatcher.py `_release_ended`."""

    def __len__(self) -> int:
        return len(self.silences)

    def put(self, key: str, silence: Silence | None, now: datetime | None = None) -> None:
        """A record of the topic: a silence, or None (a tombstone) which removes `key`."""
        self.version += 1
        self._remove(key)
        if silence is None:
            return
        self.silences[key] = silence
        matcher, values = _anchor(silence)
        by_value = self._index[matcher]
        for value in values:
            by_value.setdefault(value, set()).add(key)
        if len(self.silences) > self.limit:
            self._trim(now or datetime.now(UTC))

    def _remove(self, key: str) -> None:
        silence = self.silences.pop(key, None)
        if silence is None:
            return
        matcher, values = _anchor(silence)
        by_value = self._index[matcher]
        for value in values:
            keys = by_value.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del by_value[value]

    def _trim(self, now: datetime) -> None:
        by_end = sorted(
            self.silences.items(), key=lambda kv: (not kv[1].expired(now), kv[1].ends_at)
        )
        for key, silence in by_end[: len(self.silences) - self.limit]:
            if not silence.expired(now):
                self.dropped_active += 1
            self._remove(key)

    def _candidates(self, alert: Alert) -> set[str]:
        """The keys of the silences indexed under one of `alert`'s values."""
        customer = None if alert.customer is None else alert.customer.customer_id
        wanted: tuple[tuple[str, Collection[str | None]], ...] = (
            ("order_ids", (alert.order_id,)),
            ("customer_ids", (customer,)),
            ("units", alert.units),
            ("stages", (alert.stage,)),
            ("types", (alert.type.value,)),
        )
        keys: set[str] = set()
        for matcher, values in wanted:
            by_value = self._index[matcher]
            for value in values:
                if value is not None and (found := by_value.get(value)):
                    keys |= found
        return keys

    def silencing(self, alert: Alert, endpoint: str, now: datetime) -> Silence | None:
        """The silence in force at `now` covering `alert` to `endpoint` (the one ending
        last, so the id recorded is the one that holds longest), None if none."""
        found = [
            s
            for key in self._candidates(alert)
            if (s := self.silences[key]).in_force(now) and s.matches(alert, endpoint)
        ]
        return max(found, key=lambda s: (s.ends_at, s.silence_id), default=None)
