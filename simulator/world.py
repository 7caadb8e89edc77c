"""The fixed parts of the simulated chain: sites, units, products, customers, downtimes.

Unit downtimes are a pure function of (seed, unit, day), so the orders that
queue at a broken unit and the unit-status stream that reports the breakdown
agree without sharing any mutable state, and an endless live run never has
to precompute a calendar. Each incident lies inside its own day, which keeps
one unit's downtimes from overlapping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from schemas.plan import SlaPlan
from simulator.records import MS_PER_DAY, MS_PER_H, MS_PER_MIN

SITE_OFFSET_MIN: Final[dict[str, int]] = {
    "yarn_sourcing": 330,
    "dyeing": 330,
    "knitting": 60,
    "tailoring": 60,
}
"""Where the stages run: spinning and dye house at +05:30, knitting and
tailoring at +01:00, the rest in UTC (as in the contract's examples)."""

UNIT_PREFIX: Final[dict[str, str]] = {
    "yarn_sourcing": "YARN-",
    "dyeing": "DYE-",
    "knitting": "KNIT-N",
    "tailoring": "TAIL-",
    "quality_check": "QC-",
    "packaging": "PACK-",
    "shipping": "SHIP-",
}

REASONS: Final[dict[str, tuple[str, ...]]] = {
    "yarn_sourcing": ("material_shortage", "carrier_delay", "other"),
    "dyeing": ("machine_breakdown", "power_outage", "quality_hold"),
    "knitting": ("machine_breakdown", "power_outage", "labour_shortage"),
    "tailoring": ("labour_shortage", "machine_breakdown", "power_outage"),
    "quality_check": ("quality_hold", "labour_shortage"),
    "packaging": ("material_shortage", "labour_shortage"),
    "shipping": ("carrier_delay", "other"),
}
DEFAULT_REASONS: Final = ("machine_breakdown", "power_outage", "other")

PRODUCTS: Final[tuple[tuple[str, float], ...]] = (
    ("merino-crewneck", 0.42),
    ("alpaca-beanie", 0.12),
    ("cotton-cardigan", 0.55),
    ("lambswool-scarf", 0.18),
    ("cashmere-sweater", 0.38),
    ("fisherman-rib-jumper", 0.65),
)
"""Product and yarn weight per piece (kg), which sets the kg quantities of early stages."""

TIERS: Final = ("platinum", "gold", "standard")
TIER_WEIGHTS: Final = (0.12, 0.28, 0.60)
REGIONS: Final = ("EU", "NA", "APAC", "UK")
_NAME_A: Final = ("Nordic", "Cedar", "Harbour", "Alpine", "Highland", "Fjord", "Saffron", "Meadow")
_NAME_B: Final = ("Knits", "Wool Co", "& Pine", "Outfitters", "Apparel", "Mills", "Threads")
_NAME_C: Final = ("AB", "Ltd", "GmbH", "Inc", "SAS", "BV")


def stage_offset(stage: str) -> int:
    return SITE_OFFSET_MIN.get(stage, 0)


def unit_ids(plan: SlaPlan, seed: int) -> dict[str, tuple[str, ...]]:
    """Two or three units per stage (`DYE-01`, `KNIT-N4`), fixed per seed."""
    rng = random.Random(f"{seed}:units")
    units: dict[str, tuple[str, ...]] = {}
    for stage in plan.route:
        prefix = UNIT_PREFIX.get(stage, stage[:4].upper() + "-")
        count = rng.choice((2, 3, 3))
        pad = "" if prefix.endswith("N") else "0"
        units[stage] = tuple(f"{prefix}{pad}{i}" for i in range(1, count + 1))
    return units


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    name: str
    tier: str
    region: str
    account_manager: str
    updated_days_ago: int


def customers(seed: int, count: int) -> tuple[Customer, ...]:
    rng = random.Random(f"{seed}:customers")
    out = []
    for i in range(1, count + 1):
        name = f"{rng.choice(_NAME_A)} {rng.choice(_NAME_B)} {rng.choice(_NAME_C)}"
        tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
        manager = f"{rng.choice('abcdefghjklmnprst')}.{rng.choice(_NAME_A).lower()}@example.com"
        out.append(
            Customer(f"C-{i:04d}", name, tier, rng.choice(REGIONS), manager, rng.randint(1, 400))
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Incident:
    """One downtime of a unit: `down` or `degraded` at `start_ms`, `up` at `end_ms`."""

    unit_id: str
    stage: str
    status: str
    reason: str
    start_ms: int
    end_ms: int
    expected_up_ms: int
    event_ids: tuple[str, str]


def new_event_id(rng: random.Random) -> str:
    """A UUID-shaped id drawn from `rng`, so ids repeat exactly per seed."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class UnitSchedule:
    """Downtimes per (unit, day), derived on demand and cached.

    Day `k` is `[start + k days, start + k+1 days)`; each unit has at most one
    incident starting and ending within a day. `forget_before(day)` bounds the
    cache in endless runs.
    """

    def __init__(
        self, seed: int, start_ms: int, units: dict[str, tuple[str, ...]], rate: float
    ) -> None:
        self._seed = seed
        self._start_ms = start_ms
        self._rate = rate
        self.stage_of = {unit: stage for stage, ids in units.items() for unit in ids}
        self._cache: dict[tuple[str, int], Incident | None] = {}

    def day_of(self, ms: int) -> int:
        return (ms - self._start_ms) // MS_PER_DAY

    def incident(self, unit_id: str, day: int) -> Incident | None:
        key = (unit_id, day)
        if key in self._cache:
            return self._cache[key]
        found = self._roll(unit_id, day)
        self._cache[key] = found
        return found

    def _roll(self, unit_id: str, day: int) -> Incident | None:
        if day < 0:
            return None
        rng = random.Random(f"{self._seed}:unit:{unit_id}:{day}")
        if rng.random() >= self._rate:
            return None
        stage = self.stage_of[unit_id]
        degraded = rng.random() < 0.35
        length = rng.randint(2 * MS_PER_H, 14 * MS_PER_H) // MS_PER_MIN * MS_PER_MIN
        day_start = self._start_ms + day * MS_PER_DAY
        start = day_start + rng.randint(0, MS_PER_DAY - length - MS_PER_MIN) // MS_PER_MIN * (
            MS_PER_MIN
        )
        estimate = int(length * rng.uniform(0.6, 1.3)) // MS_PER_MIN * MS_PER_MIN
        return Incident(
            unit_id,
            stage,
            "degraded" if degraded else "down",
            rng.choice(REASONS.get(stage, DEFAULT_REASONS)),
            start,
            start + length,
            start + estimate,
            (new_event_id(rng), new_event_id(rng)),
        )

    def overlapping(self, unit_id: str, start_ms: int, end_ms: int) -> list[Incident]:
        """Incidents of a unit that overlap `[start_ms, end_ms]`, by start."""
        found = []
        for day in range(self.day_of(start_ms), self.day_of(end_ms) + 1):
            inc = self.incident(unit_id, day)
            if inc is not None and inc.start_ms < end_ms and start_ms < inc.end_ms:
                found.append(inc)
        return found

    def forget_before(self, day: int) -> None:
        for key in [k for k in self._cache if k[1] < day]:
            del self._cache[key]
