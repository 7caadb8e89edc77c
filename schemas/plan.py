"""The SLA plan (RULES.md, "SLA plan"): routes, budgets and margins as configuration.

Stages and budgets change per factory and per season, so they live in a YAML file
rather than in code. A bad plan must stop the worker at start-up: a typo in a stage
name would otherwise silently disable every alert of that stage. Errors therefore
name the offending key (`plan key 'stage_duration.dyeing': ...`) so an operator can
fix the file without reading a stack trace.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Hashable, Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.common import StageName
from schemas.files import load_config_yaml, read_config_bytes
from schemas.orders import MAX_ROUTE_STAGES
from schemas.text import capped, shorten

Tier = Literal["platinum", "gold", "standard"]
"""Customer tiers of the CRM (CONTRACT.md); unknown customers count as `standard`."""

DEFAULT_TIER: Tier = "standard"

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(-?)\s*([0-9]+)\s*([smhd])\s*$", re.ASCII)
"""ASCII digits and blanks only: `\\d` took any script's digits ('٤h' was 4 hours)."""
_MAX_AMOUNT_DIGITS = 12
"""The longest amount read as a number: a year is 31536000s (8 digits), so a longer one,
zero-padded aside, is too long. Bounded before `int()`: 5,000 digits raised Python's
int-conversion limit as a bare ValueError instead of the duration's own error."""
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PlanError(Exception):
    """A plan that cannot be used; the message names the offending key."""


MAX_DURATION = timedelta(days=365)
"""The longest duration a plan may give (a budget, a margin, the grace): longer is a typo.

Bounded so that every ETA stays a date: an order's remaining budget adds up to
`MAX_ROUTE_STAGES` stages and handoffs, and `9999999999d` overflowed Python's
datetime inside the rules instead of being refused with the key that said it.
"""


def parse_duration(value: Any) -> timedelta:
    """`90s`, `30m`, `36h`, `2d` -> timedelta; one unit per value keeps files unambiguous."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise PydanticCustomError("duration", "duration must not be negative")
        return _at_most_a_year(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise PydanticCustomError(
            "duration",
            "duration must be written like 90s, 30m, 36h or 2d, got {value}",
            {"value": shorten(repr(value), 80)},
        )
    sign, amount, unit = match.groups()
    if sign and amount.strip("0"):
        raise PydanticCustomError("duration", "duration must not be negative")
    if len(amount) > _MAX_AMOUNT_DIGITS:
        raise _too_long(capped(value.strip(), quoted=False, digits=True))
    seconds = int(amount) * _UNIT_SECONDS[unit]
    if seconds > MAX_DURATION.total_seconds():
        raise _too_long(capped(value.strip(), quoted=False, digits=True))
    return timedelta(seconds=seconds)


def _at_most_a_year(value: timedelta) -> timedelta:
    if value > MAX_DURATION:
        raise _too_long(format_duration(value))
    return value


def _too_long(value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "duration",
        "duration must be at most {most}, got {value}",
        {"most": format_duration(MAX_DURATION), "value": str(value).strip()},
    )


def format_duration(value: timedelta) -> str:
    """The largest unit that divides the duration exactly, so a dumped plan reloads equal."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TierPolicy(_Strict):
    at_risk_margin: Duration


class ProductOverride(_Strict):
    stage_duration: dict[StageName, Duration] = Field(default_factory=dict)


class _PlanProblem(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"plan key '{key}': {reason}")


class SlaPlan(_Strict):
    """One validated plan; shared read-only by every rule evaluation."""

    route: Annotated[tuple[StageName, ...], Field(max_length=MAX_ROUTE_STAGES)]
    qc_stage: StageName
    rework_stage: StageName
    start_within: Duration
    handoff: Duration
    stage_duration: dict[StageName, Duration]
    tiers: dict[Tier, TierPolicy] = Field(default_factory=dict)
    quantity_loss_tolerance: float = 0.0
    grace: Duration = timedelta(0)
    products: dict[str, ProductOverride] = Field(default_factory=dict)
    contingency: dict[StageName, str] = Field(default_factory=dict)

    _index: dict[str, int] = PrivateAttr(default_factory=dict)
    _memo: dict[Hashable, Any] = PrivateAttr(default_factory=dict)

    @field_validator("quantity_loss_tolerance")
    @classmethod
    def _tolerance_is_a_fraction(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise PydanticCustomError(
                "tolerance", "must be in [0, 1), got {value}", {"value": value}
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SlaPlan:
        try:
            self._check()
        except _PlanProblem as problem:
            raise PydanticCustomError("plan", str(problem)) from None
        return self

    def _check(self) -> None:
        seen = self._check_route()
        self._check_stage_keys(seen)

    def _check_route(self) -> set[str]:
        """The route's own stages, once each, with rework before QC on it."""
        if not self.route:
            raise _PlanProblem("route", "must list at least one stage")
        seen: set[str] = set()
        for stage in self.route:
            if stage in seen:
                raise _PlanProblem("route", f"stage {stage!r} appears twice")
            seen.add(stage)
        for key in ("qc_stage", "rework_stage"):
            if getattr(self, key) not in seen:
                raise _PlanProblem(key, f"{getattr(self, key)!r} is not on the route")
        if self.route.index(self.rework_stage) >= self.route.index(self.qc_stage):
            raise _PlanProblem("rework_stage", "must come before qc_stage on the route")
        return seen

    def _check_stage_keys(self, seen: set[str]) -> None:
        """Every stage named as a key is on the route; every route stage has a duration."""
        for stage in self.stage_duration:
            if stage not in seen:
                raise _PlanProblem(f"stage_duration.{stage}", "unknown stage (not on the route)")
        for stage in self.route:
            if stage not in self.stage_duration:
                raise _PlanProblem(f"stage_duration.{stage}", "missing duration for a route stage")
        for product, override in self.products.items():
            for stage in override.stage_duration:
                if stage not in seen:
                    key = f"products.{product}.stage_duration.{stage}"
                    raise _PlanProblem(key, "unknown stage (not on the route)")
        for stage in self.contingency:
            if stage not in seen:
                raise _PlanProblem(f"contingency.{stage}", "unknown stage (not on the route)")

    def model_post_init(self, context: Any, /) -> None:
        self._index = {stage: i for i, stage in enumerate(self.route)}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> SlaPlan:
        """A copy with its own caches: pydantic's shares the private ones, so a copy with
        another `start_within` answered from the original's memo (its fingerprint too)."""
        copy = super().model_copy(update=update, deep=deep)
        copy._memo = {}
        copy.model_post_init(None)
        return copy

    @property
    def fingerprint(self) -> str:
        """A short digest of what the plan says (not of its file: comments and layout do
        not count). The engine stamps each order's state with it, so that a worker
        started with another plan re-derives the orders judged by the old one."""
        return self.memo("fingerprint", self._digest)

    def _digest(self) -> str:
        said = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(said.encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        # Fields only: the private caches depend on which evaluations already ran.
        return isinstance(other, SlaPlan) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """Cache a value derived from this (immutable) plan, e.g. a route's remaining budgets."""
        try:
            return cast(T, self._memo[key])
        except KeyError:
            value = self._memo[key] = compute()
            return value

    def knows(self, stage: str) -> bool:
        """Whether a stage has a duration, i.e. may appear on an order's route."""
        return stage in self.stage_duration

    def route_index(self, stage: str) -> int | None:
        """Position on the plan's default route (None when off it)."""
        return self._index.get(stage)

    def duration(self, stage: str, product: str | None = None) -> timedelta:
        """Budget of a visit: the product's override first, else `stage_duration`."""
        if product is not None:
            override = self.products.get(product)
            if override is not None and stage in override.stage_duration:
                return override.stage_duration[stage]
        return self.stage_duration[stage]

    def at_risk_margin(self, tier: str) -> timedelta:
        """A tier without an entry gets no extra margin."""
        policy = self.tiers.get(tier)  # type: ignore[call-overload]
        return policy.at_risk_margin if policy is not None else timedelta(0)


_PROBLEMS_SHOWN = 3
"""A plan with 100,000 bad stage names made an error line of 7.8 MB: the first few say it."""


def _describe(error: ValidationError) -> str:
    problems = []
    items = error.errors(include_url=False)
    for item in items[:_PROBLEMS_SHOWN]:
        if item["loc"]:
            key = ".".join(str(part) for part in item["loc"] if part != "[key]")
            key = shorten(key, 100)
            problems.append(f"plan key '{key}': {item['msg']}")
        else:
            problems.append(item["msg"])
    more = len(items) - _PROBLEMS_SHOWN
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def plan_from_mapping(data: Any) -> SlaPlan:
    """Validate an already-parsed plan document, turning pydantic errors into `PlanError`."""
    if not isinstance(data, dict):
        raise PlanError("plan must be a YAML mapping of keys")
    try:
        return SlaPlan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(_describe(exc)) from None


def load_plan(path: Path | None = None) -> SlaPlan:
    """Read a plan file, or the shipped knitwear default when `path` is None."""
    if path is None:
        raw = resources.files("schemas").joinpath("plans", "knitwear.yaml").read_bytes()
        return parse_plan(raw, "shipped default plan")[0]
    try:
        raw = read_config_bytes(Path(path))
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror or exc}") from None
    return parse_plan(raw, str(path))[0]


def parse_plan(raw: bytes, where: str) -> tuple[SlaPlan, str]:
    """The plan in a file's bytes and its text; `PlanError` naming `where` if it is bad.

    The one way a plan file becomes a plan: the worker, the replay and the
    backtest (which keeps the bytes to hash them) refuse the same files alike.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"plan {where} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = load_config_yaml(text)
    except yaml.YAMLError as exc:
        raise PlanError(f"SLA plan {where} is not valid YAML: {exc}") from None
    try:
        return plan_from_mapping(data), text
    except PlanError as exc:
        raise PlanError(f"SLA plan {where}: {exc}") from None
