"""SLA plan: the shipped default is RULES.md's example; bad plans name their key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import PydanticCustomError
from rules_builders import PLAN

from schemas.plan import PlanError, SlaPlan, load_plan, parse_duration, plan_from_mapping
from streams.rules.visits import remaining_budget

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_default_plan_is_the_rules_example() -> None:
    assert PLAN.route == (
        "yarn_sourcing",
        "dyeing",
        "knitting",
        "tailoring",
        "quality_check",
        "packaging",
        "shipping",
    )
    assert (PLAN.qc_stage, PLAN.rework_stage) == ("quality_check", "tailoring")
    assert PLAN.start_within == timedelta(hours=24)
    assert PLAN.handoff == timedelta(hours=12)
    hours = {stage: d / timedelta(hours=1) for stage, d in PLAN.stage_duration.items()}
    assert hours == {
        "yarn_sourcing": 48,
        "dyeing": 36,
        "knitting": 48,
        "tailoring": 36,
        "quality_check": 8,
        "packaging": 12,
        "shipping": 72,
    }
    assert PLAN.at_risk_margin("platinum") == timedelta(hours=24)
    assert PLAN.at_risk_margin("gold") == timedelta(hours=12)
    assert PLAN.at_risk_margin("standard") == timedelta(0)
    assert PLAN.quantity_loss_tolerance == 0.03
    assert PLAN.grace == timedelta(0)
    assert PLAN.contingency["knitting"].startswith("Move queued orders")


def test_plan_duration_prefers_the_product_override() -> None:
    assert PLAN.duration("knitting", "merino-crewneck") == timedelta(hours=60)
    assert PLAN.duration("knitting", "alpaca-beanie") == timedelta(hours=48)
    assert PLAN.duration("dyeing", "merino-crewneck") == timedelta(hours=36)
    assert PLAN.duration("knitting") == timedelta(hours=48)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("36h", timedelta(hours=36)),
        ("2d", timedelta(days=2)),
        ("0h", timedelta(0)),
        ("0s", timedelta(0)),
    ],
)
def test_plan_durations_are_written_with_one_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("\u0664h", "written like 90s, 30m, 36h or 2d, got '\u0664h'"),  # Arabic-Indic 4
        ("\uff14h", "written like"),  # full-width 4
        ("4\u3000h", "written like"),  # ideographic space
        ("9" * 5000 + "h", f"at most 365d, got {'9' * 40}... (5,000 digits)"),
        ("9" * 4000 + "h", f"at most 365d, got {'9' * 40}... (4,000 digits)"),
        ("-" + "9" * 5000 + "h", "must not be negative"),
    ],
)
def test_a_duration_is_ascii_digits_of_a_bounded_length(text: str, said: str) -> None:
    """'\u0664h' (Arabic-Indic four) was 4 hours: `\\d` took any script's digits. 5,000
    digits raised Python's int-conversion limit, a bare ValueError ("Exceeds the limit
    (4300 digits)..."), and 4,000 were quoted whole in the error line."""
    with pytest.raises(PydanticCustomError) as refused:
        parse_duration(text)
    assert said in str(refused.value)
    assert len(str(refused.value)) < 120


def test_plan_dumps_and_reloads_equal() -> None:
    assert plan_from_mapping(PLAN.model_dump(mode="json")) == PLAN


def _bad(**changes: Any) -> dict[str, Any]:
    data = PLAN.model_dump(mode="json")
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = data
        for part in path:
            target = target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        (_bad(stage_duration__weaving="3h"), "stage_duration.weaving", "unknown stage"),
        (_bad(stage_duration__dyeing=_DELETE), "stage_duration.dyeing", "missing duration"),
        (_bad(stage_duration__dyeing="-3h"), "stage_duration.dyeing", "must not be negative"),
        (_bad(handoff="-1d"), "handoff", "must not be negative"),
        (_bad(stage_duration__dyeing="3 hours"), "stage_duration.dyeing", "written like"),
        (
            _bad(products__merino_x={"stage_duration": {"weaving": "1h"}}),
            "products.merino_x.stage_duration.weaving",
            "unknown stage",
        ),
        (_bad(contingency__weaving="call"), "contingency.weaving", "unknown stage"),
        (_bad(qc_stage="inspection"), "qc_stage", "not on the route"),
        (_bad(rework_stage="weaving"), "rework_stage", "not on the route"),
        (_bad(rework_stage="packaging"), "rework_stage", "before qc_stage"),
        (
            _bad(
                route=[
                    "yarn_sourcing",
                    "dyeing",
                    "dyeing",
                    "knitting",
                    "tailoring",
                    "quality_check",
                    "packaging",
                    "shipping",
                ]
            ),
            "route",
            "appears twice",
        ),
        (_bad(handoff="9999999999d"), "handoff", "at most 365d, got 9999999999d"),
        (_bad(handoff="9" * 5000 + "d"), "handoff", "at most 365d, got 9999"),
        (_bad(handoff="\u0664h"), "handoff", "written like"),
        (_bad(stage_duration__dyeing="366d"), "stage_duration.dyeing", "at most 365d"),
        (_bad(grace=timedelta(days=366)), "grace", "at most 365d"),
        (_bad(route=[f"s{i}" for i in range(65)]), "route", "at most 64"),
        (_bad(quantity_loss_tolerance=1.0), "quantity_loss_tolerance", "[0, 1)"),
        (_bad(quantity_loss_tolerance=-0.1), "quantity_loss_tolerance", "[0, 1)"),
        (_bad(tiers__diamond={"at_risk_margin": "1h"}), "tiers.diamond", ""),
        (_bad(colour="blue"), "colour", ""),
    ],
)
def test_bad_plan_is_refused_naming_its_key(data: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan_from_mapping(data)
    assert f"plan key '{key}'" in str(caught.value)
    assert reason in str(caught.value)


def test_load_plan_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "route: [a, b]\nqc_stage: b\nrework_stage: a\nstart_within: 1h\nhandoff: 90s\n"
        "stage_duration: {a: 30m, b: 2d}\n",
        encoding="utf-8",
    )
    plan = load_plan(path)
    assert isinstance(plan, SlaPlan)
    assert plan.duration("b") == timedelta(days=2)
    assert plan.at_risk_margin("gold") == timedelta(0)


def test_load_plan_refuses_unreadable_or_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("route: [a, b\n", encoding="utf-8")
    with pytest.raises(PlanError, match="not valid YAML"):
        load_plan(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n", encoding="utf-8")
    with pytest.raises(PlanError, match="mapping"):
        load_plan(listed)


def test_the_longest_durations_a_plan_allows_keep_every_eta_a_date() -> None:
    """A year per duration and 64 stages: the rules run over the whole route without
    overflowing a datetime (`9999999999d` did, inside the rules)."""
    route = [f"s{i}" for i in range(64)]
    year = "365d"
    plan = plan_from_mapping(
        {
            "route": route, "qc_stage": "s62", "rework_stage": "s61", "start_within": year,
            "handoff": year, "stage_duration": dict.fromkeys(route, year), "grace": year,
            "tiers": {"platinum": {"at_risk_margin": year}},
        }
    )  # fmt: skip
    budget = remaining_budget(plan.route, plan, None)
    assert budget[0] == timedelta(days=365 * 2 * 64)
    assert datetime(2100, 1, 1, tzinfo=UTC) + budget[0] + plan.grace < datetime.max.replace(
        tzinfo=UTC
    )


def test_a_plan_key_written_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    shipped = (ROOT / "schemas" / "plans" / "knitwear.yaml").read_text(encoding="utf-8")
    path.write_text(shipped + "handoff: 1s\n", encoding="utf-8")
    with pytest.raises(PlanError, match=r"found the key 'handoff' twice \(line \d+, column 1\)"):
        load_plan(path)


def test_a_stage_written_twice_in_a_json_plan_is_refused_with_its_line(tmp_path: Path) -> None:
    """A plan may be JSON (YAML reads it): its loader kept the last of two equal keys."""
    path = tmp_path / "plan.json"
    said = json.dumps(load_plan().model_dump(mode="json"))
    path.write_text(said.replace('"dyeing": "36h"', '"dyeing": "36h", "dyeing": "1s"', 1))
    with pytest.raises(
        PlanError,
        match=r"^SLA plan .*plan.json .*found the key 'dyeing' twice \(line 1, column \d+\)$",
    ):
        load_plan(path)


def test_a_plan_with_many_mistakes_says_the_first_few_in_a_short_line() -> None:
    data = _bad(stage_duration={f"S-{i}": "1h" for i in range(100_000)})
    with pytest.raises(PlanError) as caught:
        plan_from_mapping(data)
    message = str(caught.value)
    assert message.startswith("plan key 'stage_duration.S-0': String should match pattern")
    assert message.endswith("; and 99997 more")
    assert len(message) < 1000
