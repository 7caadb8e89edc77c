"""Obligations of an order (RULES.md "Obligations") and their status at a clock.

An obligation is a deadline `D` and, once it happened, the fulfilling time `F`.
Both come from facts only; the clock `T` is applied last, in `alerting`,
so the same facts give the same alerts whenever they are evaluated at the same
`T`, and `next_deadline` can tell the timer index when `T` alone will matter.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.alerts import AlertType
from schemas.plan import SlaPlan
from streams.rules.order_record import OrderRecord
from streams.rules.visits import Visit, Walk, route_budget


# Not frozen: built afresh on every derivation of an order, and a frozen
# dataclass's __init__ costs about four times a plain one. Never mutated.
@dataclass(slots=True)
class Obligation:
    type: AlertType
    deadline: datetime
    fulfilled_at: datetime | None
    visit: Visit | None = None


def order_obligations(
    record: OrderRecord | None,
    walk: Walk,
    route: Sequence[str],
    plan: SlaPlan,
    product: str | None,
) -> list[Obligation]:
    """The obligations the facts imply, whether due yet or not, but for those of the
    visits fulfilled in time (`F <= D + grace`): they raise no alert at any clock
    (`alerting`) and set no deadline (`next_obligation_instant`), and an order
    derives one of each for most of its visits on every change."""
    result: list[Obligation] = []
    if record is not None:
        result.append(
            Obligation(
                AlertType.START_OVERDUE, record.placed_at + plan.start_within, walk.first_scan_at
            )
        )
    visits = walk.visits
    opened = [visit.opened_seq for visit in visits]
    last_stage = route[-1]
    duration = route_budget(route, plan, product).duration  # every visit is on the route
    grace, handoff = plan.grace, plan.handoff
    for visit in visits:
        start, end = visit.start, visit.end
        if start is not None:
            deadline = start + duration[visit.stage]
            if end is None or end > deadline + grace:
                result.append(Obligation(AlertType.STAGE_OVERDUE, deadline, end, visit))
        if end is None or visit.ended_seq is None:
            continue
        if visit.outcome == "completed" and visit.stage == last_stage:
            continue  # no handoff after the last stage
        # The next visit of the order is the first one opened after this one ended.
        after = bisect_right(opened, visit.ended_seq)
        fulfilled: datetime | None = None
        deadline = end + handoff
        if after < len(visits):
            following = visits[after]
            fulfilled = following.start if following.start is not None else following.end
            if fulfilled is not None and fulfilled <= deadline + grace:
                continue
        result.append(Obligation(AlertType.HANDOFF_OVERDUE, deadline, fulfilled, visit))
    if record is not None:
        result.append(Obligation(AlertType.ORDER_OVERDUE, record.due_at, walk.completed_at))
    return result


def alerting(
    obligations: Sequence[Obligation], now: datetime, grace: timedelta
) -> list[Obligation]:
    """The situations table of RULES.md: the obligations that raise an alert at `now`.

    One fulfilled after `D + grace` raises a resolved alert, one unfulfilled at
    `now >= D + grace` an open one (its `fulfilled_at` tells which); any other
    raises none (retracted if published). One loop over all of them: an order
    has an obligation per visit and most raise nothing, on every derivation.
    """
    raising: list[Obligation] = []
    for obligation in obligations:
        due = obligation.deadline + grace
        fulfilled = obligation.fulfilled_at
        if fulfilled > due if fulfilled is not None else now >= due:
            raising.append(obligation)
    return raising


def next_obligation_instant(
    obligations: Sequence[Obligation],
    now: datetime,
    grace: timedelta,
    cancelled_at: datetime | None,
) -> datetime | None:
    """The earliest `D + grace` after `now` of an unfulfilled, not-dropped obligation.

    Only those change with the clock alone: everything else is decided by facts.
    """
    soonest: datetime | None = None
    for obligation in obligations:
        if obligation.fulfilled_at is not None:
            continue
        if cancelled_at is not None and obligation.deadline > cancelled_at:
            continue
        due = obligation.deadline + grace
        if due > now and (soonest is None or due < soonest):
            soonest = due
    return soonest
