"""The simulated chain as one stream of records, in publication order.

Pure generation, no I/O: `generate(config)` yields `SimRecord`s sorted by
simulated publication time across every order, the CRM and the units, as the
real world would publish them. Orders are built only when their placing time
comes up and dropped when their last record is out, so memory follows the
orders in flight, not the length of the run (a heap merges the per-order
streams). Invalid records are slipped in just before the record they were
made from, from a random stream of their own.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from itertools import count

from schemas.plan import SlaPlan, load_plan
from simulator.background import crm_day, initial_customers, unit_day
from simulator.config import SimConfig
from simulator.invalid import break_record
from simulator.orders import OrderContext, build_order
from simulator.records import MS_PER_DAY, MS_PER_H, MS_PER_S, SimRecord
from simulator.world import UnitSchedule, customers, unit_ids

_Entry = tuple[int, int, SimRecord, Iterator[SimRecord], bool]
"""(publication ms, push sequence, record, its stream, is an order stream): the push
sequence is deterministic and unique, so ties never compare records."""


def placements(config: SimConfig, start_ms: int) -> Iterator[tuple[int, int]]:
    """(placed_at ms, order number) in time order: `orders_per_day` orders a day, 06-20h UTC."""
    number = 0
    days = range(config.days) if config.days is not None else count()
    for day in days:
        rng = random.Random(f"{config.seed}:placements:{day}")
        day_ms = start_ms + day * MS_PER_DAY
        times = sorted(
            day_ms + rng.randrange(6 * MS_PER_H, 20 * MS_PER_H) // MS_PER_S * MS_PER_S
            for _ in range(config.orders_per_day)
        )
        for placed in times:
            number += 1
            yield placed, number


def generate(config: SimConfig, plan: SlaPlan | None = None) -> Iterator[SimRecord]:
    """Every record of the run in publication order; endless when `config.days` is None.

    A finite run ends with the last record of the last order (the CRM and
    unit streams run alongside until then).
    """
    plan = plan if plan is not None else load_plan(None)
    start_ms = int(config.start.timestamp()) * MS_PER_S
    units = unit_ids(plan, config.seed)
    schedule = UnitSchedule(config.seed, start_ms, units, config.anomalies.unit_incident)
    pool = customers(config.seed, config.customer_count)
    ctx = OrderContext(config, plan, units, schedule, pool)
    rates = config.anomalies

    heap: list[_Entry] = []
    sequence = count()

    def push(stream: Iterator[SimRecord], is_order: bool) -> bool:
        first = next(stream, None)
        if first is None:
            return False
        heapq.heappush(heap, (first.at_ms, next(sequence), first, stream, is_order))
        return True

    push(iter(initial_customers(start_ms, pool)), False)
    share = config.invalid_share
    p_invalid = share / (1 - share) if share < 1 else 1.0
    bad_rng = random.Random(f"{config.seed}:invalid")
    orders = placements(config, start_ms)
    upcoming = next(orders, None)
    day = 0
    active = 0
    while True:
        if active == 0 and upcoming is None:
            return
        # Admit every source due no later than the earliest pending record: the
        # next day of CRM and unit traffic, or the next order (days first on ties).
        while True:
            top = heap[0][0] if heap else None
            day_ms = start_ms + day * MS_PER_DAY
            order_first = upcoming is not None and upcoming[0] < day_ms
            due = upcoming[0] if upcoming is not None and order_first else day_ms
            if top is not None and due > top:
                break
            if upcoming is not None and order_first:
                placed, number = upcoming
                if push(iter(build_order(ctx, number, placed)), True):
                    active += 1
                upcoming = next(orders, None)
            else:
                crm = crm_day(
                    config.seed, start_ms, day, pool, rates.crm_update, rates.crm_tombstone
                )
                push(iter(crm), False)
                push(iter(unit_day(config.seed, start_ms, day, schedule)), False)
                day += 1
        _, _, record, stream, is_order = heapq.heappop(heap)
        following = next(stream, None)
        if following is not None:
            heapq.heappush(heap, (following.at_ms, next(sequence), following, stream, is_order))
        elif is_order:
            active -= 1
        if record.value is not None and bad_rng.random() < p_invalid:
            broken = break_record(record, bad_rng)
            if broken is not None:
                yield broken
        yield record
