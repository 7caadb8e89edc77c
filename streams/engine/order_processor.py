"""What happens to one order when something arrives for it (pure, no Kafka).

Every entry point mutates the order's slot and returns the `Effects` to
publish. The agents stay thin: read the slot, call one function, write the
slot, send the effects. Alerts are always re-derived from the facts
(`streams.rules.evaluate_order`) and only the difference from what was
published before is emitted, so redelivering an input is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from schemas.alerts import Alert, AlertStatus
from schemas.dead_letter import DeadLetter, DeadLetterSource, ErrorDetail, ReasonCode
from schemas.orders import OrderRecord
from schemas.plan import SlaPlan
from schemas.scans import ScanEvent
from streams.engine.messages import CustomerAnswer, DowntimeAnswer, Occupancy, Subscription
from streams.engine.order_slot import OrderSlot, downtime_from_json
from streams.rules.evaluate import customer_json, evaluate_order
from streams.rules.facts import (
    CustomerFact,
    add_record,
    add_scan,
    format_utc_cached,
    to_ms,
)
from streams.rules.order_record import fold_records
from streams.rules.reference import order_record_fact, scan_fact


@dataclass(slots=True)
class Effects:
    """What one input makes the engine publish, in this order."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    snapshot: bytes | None = None
    """The order-state record (CONTRACT.md "Order state") as JSON bytes."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    occupancy: list[Occupancy] = field(default_factory=list)
    changed: bool = False
    """False when the input was a no-op (a known event_id, a stale answer)."""


class OrderProcessor:
    """The rules applied to one order slot at a time, under one plan."""

    def __init__(self, plan: SlaPlan, *, snapshots: bool = True) -> None:
        self.plan = plan
        self.snapshots = snapshots

    # --- inputs ---------------------------------------------------------------

    def on_scan(
        self, slot: OrderSlot, scan: ScanEvent, source: DeadLetterSource, raw: bytes, now: datetime
    ) -> Effects:
        if not add_scan(slot.facts, scan_fact(scan)):
            # a known event_id changes nothing; re-announce the joins in case this is a
            # redelivery after a crash that kept the slot but lost the messages it sent
            return self.rejoin(slot)
        return self._evaluate(slot, now, changed=True, arrival=(scan.event_id, source, raw))

    def on_order_record(
        self,
        slot: OrderSlot,
        record: OrderRecord,
        source: DeadLetterSource,
        raw: bytes,
        now: datetime,
    ) -> Effects:
        assert source.offset is not None
        if not add_record(slot.facts, order_record_fact(record, source.offset)):
            return self.rejoin(slot)
        effects = self._evaluate(slot, now, changed=True)
        return self._with_record_source(effects, slot, source, raw, now)

    def on_customer(self, slot: OrderSlot, answer: CustomerAnswer, now: datetime) -> Effects:
        if answer["cid"] != slot.subscribed_customer:
            return Effects()  # an answer about a customer the order no longer has
        if answer["cid"] == slot.customer_id and answer["v"] < slot.customer_version:
            return Effects()
        slot.customer_id = answer["cid"]
        slot.customer_version = answer["v"]
        slot.customer = None if answer["c"] is None else CustomerFact.from_json(answer["c"])
        return self._evaluate(slot, now, changed=True)

    def on_downtimes(self, slot: OrderSlot, answer: DowntimeAnswer, now: datetime) -> Effects:
        unit = answer["u"]
        known = slot.downtime_versions.get(unit)
        if known is not None and answer["v"] < known:
            return Effects()
        slot.downtime_versions[unit] = answer["v"]
        downtimes = [downtime_from_json(d) for d in answer["d"]]
        if downtimes:
            slot.downtimes[unit] = downtimes
        else:
            slot.downtimes.pop(unit, None)
        return self._evaluate(slot, now, changed=True)

    def rejoin(self, slot: OrderSlot) -> Effects:
        """The join messages of the slot as it stands (idempotent: same versions)."""
        effects = Effects()
        if slot.subscribed_customer is not None:
            effects.subscriptions.append(
                {"k": "subscribe", "o": slot.facts.order_id, "cid": slot.subscribed_customer}
            )
        for unit, visits in sorted(slot.occupancy_sent.items()):
            effects.occupancy.append(
                {
                    "k": "occupancy",
                    "o": slot.facts.order_id,
                    "u": unit,
                    "v": slot.occupancy_version,
                    "visits": visits,
                }
            )
        return effects

    def on_clock(self, slot: OrderSlot, now: datetime) -> Effects:
        """A deadline of this order fell due: re-derive its alerts at `now`."""
        return self._evaluate(slot, now, changed=False)

    # --- the one derivation -------------------------------------------------------

    def _evaluate(
        self,
        slot: OrderSlot,
        now: datetime,
        *,
        changed: bool,
        arrival: tuple[str, DeadLetterSource, bytes] | None = None,
    ) -> Effects:
        """Re-derive the order; `arrival` is the scan just received (for its dead letter)."""
        facts = slot.facts
        effects = Effects(changed=True)
        slot.clock_ms = max(slot.clock_ms, to_ms(now))
        fold = fold_records(facts.records, self.plan)
        customer_id = fold.record.customer_id if fold.record is not None else None
        if customer_id != slot.subscribed_customer:
            if slot.subscribed_customer is not None:
                effects.subscriptions.append(
                    {"k": "unsubscribe", "o": facts.order_id, "cid": slot.subscribed_customer}
                )
            if customer_id is not None:
                effects.subscriptions.append(
                    {"k": "subscribe", "o": facts.order_id, "cid": customer_id}
                )
            slot.subscribed_customer = customer_id
            slot.customer_id, slot.customer_version, slot.customer = None, -1, None
        customer = slot.customer if slot.customer_id == customer_id else None

        evaluation = evaluate_order(
            facts.order_id, facts, customer, slot.downtimes, self.plan, now, slot.version + 1,
            fold=fold,
        )  # fmt: skip
        effects.alerts = _alert_changes(slot.published, evaluation.alerts)
        for alert in effects.alerts:
            slot.published[alert["alert_id"]] = alert
        slot.next_deadline_ms = (
            None if evaluation.next_deadline is None else to_ms(evaluation.next_deadline)
        )
        self._occupancy(slot, evaluation.occupancy, effects)
        for scan in evaluation.off_route_scans:
            if arrival is not None and arrival[0] == scan.event_id:
                self._dead_letter_off_route(
                    slot, effects, scan.event_id, arrival[1], arrival[2], now
                )
            else:
                self._dead_letter_off_route(slot, effects, scan.event_id, None, None, now)
        for record in evaluation.rejected_records:
            tag = f"r:{record.offset}"
            if tag not in slot.dead_lettered:
                slot.dead_lettered.append(tag)
                effects.dead_letters.append(
                    DeadLetter.build(
                        None,
                        DeadLetterSource(
                            kind="kafka",
                            topic="orders",
                            partition=slot.partition,
                            offset=record.offset,
                        ),
                        [
                            ErrorDetail(
                                loc="due_at", msg="due_at is not after placed_at", type="bad_update"
                            )
                        ],
                        ReasonCode.BAD_UPDATE,
                        now,
                    )
                )
        if changed or effects.alerts:
            slot.version += 1
            if self.snapshots:
                effects.snapshot = orjson.dumps(evaluation.state_json(slot.version))
        return effects

    def _occupancy(self, slot: OrderSlot, occupancy: list[Any], effects: Effects) -> None:
        by_unit: dict[str, list[list[Any]]] = {}
        for o in occupancy:
            by_unit.setdefault(o.unit_id, []).append(
                [
                    o.stage,
                    o.visit,
                    None if o.start is None else to_ms(o.start),
                    None if o.end is None else to_ms(o.end),
                ]
            )
        for unit in sorted(by_unit.keys() | slot.occupancy_sent.keys()):
            visits = sorted(by_unit.get(unit, []), key=lambda v: (v[0], v[1]))
            if slot.occupancy_sent.get(unit) == visits:
                continue
            slot.occupancy_version += 1
            slot.occupancy_sent[unit] = visits
            effects.occupancy.append(
                {
                    "k": "occupancy",
                    "o": slot.facts.order_id,
                    "u": unit,
                    "v": slot.occupancy_version,
                    "visits": visits,
                }
            )

    def _dead_letter_off_route(
        self,
        slot: OrderSlot,
        effects: Effects,
        event_id: str,
        source: DeadLetterSource | None,
        raw: bytes | None,
        now: datetime,
    ) -> None:
        tag = f"s:{event_id}"
        if tag in slot.dead_lettered:
            return
        slot.dead_lettered.append(tag)
        # Refused later (a route change): the offset is not kept, the event id names it.
        where = source or DeadLetterSource(
            kind="kafka", topic="scans", partition=slot.partition, request_id=f"event:{event_id}"
        )
        effects.dead_letters.append(
            DeadLetter.build(
                raw,
                where,
                [
                    ErrorDetail(
                        loc="stage", msg="stage is not on the order's route", type="off_route"
                    )
                ],
                ReasonCode.OFF_ROUTE,
                now,
                key=slot.facts.order_id.encode(),
            )
        )

    def _with_record_source(
        self,
        effects: Effects,
        slot: OrderSlot,
        source: DeadLetterSource,
        raw: bytes,
        now: datetime,
    ) -> Effects:
        """Give a refused order record its real source and bytes when it was just received."""
        fixed: list[DeadLetter] = []
        for letter in effects.dead_letters:
            if (
                letter.reason_code is ReasonCode.BAD_UPDATE
                and letter.source.offset == source.offset
            ):
                letter = DeadLetter.build(
                    raw, source, letter.errors, ReasonCode.BAD_UPDATE, now,
                    key=slot.facts.order_id.encode(),
                )  # fmt: skip
            fixed.append(letter)
        effects.dead_letters = fixed
        return effects


def _alert_changes(
    published: dict[str, dict[str, Any]], desired: dict[str, Alert]
) -> list[dict[str, Any]]:
    """New or changed alerts, and retractions of published ones no longer derived."""
    changes: list[dict[str, Any]] = []
    for key in sorted(desired.keys() | published.keys()):
        want = desired.get(key)
        have = published.get(key)
        if want is not None:
            body = alert_json(want)
            if body != have:
                changes.append(body)
        elif have is not None and have["status"] != AlertStatus.RETRACTED.value:
            changes.append({**have, "status": AlertStatus.RETRACTED.value})
    return changes


def _seconds(value: float) -> float | int:
    # As `schemas.alerts.Seconds`: whole seconds print as integers.
    return int(value) if float(value).is_integer() else value


def alert_json(alert: Alert) -> dict[str, Any]:
    """`alert.model_dump(mode="json")` for a rules-built alert, without pydantic.

    Every evaluation serialises every desired alert to compare it with the
    published one; pydantic's serialiser was a tenth of the engine's time.
    tests/engine checks the output against the reference engine's model_dump.
    """
    cause = alert.cause
    lateness = alert.lateness_s
    fulfilled = alert.fulfilled_at
    return {
        "alert_id": alert.alert_id,
        "type": alert.type.value,
        "severity": alert.severity.value,
        "status": alert.status.value,
        "order_id": alert.order_id,
        "unit_id": alert.unit_id,
        "stage": alert.stage,
        "visit": alert.visit,
        "deadline": format_utc_cached(alert.deadline),
        "detected_at": format_utc_cached(alert.detected_at),
        "fulfilled_at": None if fulfilled is None else format_utc_cached(fulfilled),
        "lateness_s": None if lateness is None else _seconds(lateness),
        "customer": customer_json(alert.customer),
        "cause": None
        if cause is None
        else {
            "unit_id": cause.unit_id,
            "reason": cause.reason,
            "since": format_utc_cached(cause.since),
        },
        "details": dict(alert.details),
    }
