"""The dashboards as JSON: valid against Grafana's schema, deterministic, linked by fixed uids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from dashboards import prometheus
from dashboards.export import build_all, dumps, export, queries, to_json
from dashboards.query import DATASOURCE_UID, PLUGIN_ID
from schemas.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "deploy" / "grafana" / "schema" / "dashboard.jsonschema.json"
EXPORTED = ROOT / "deploy" / "grafana" / "dashboards"
UIDS = {
    "cw-overview",
    "cw-order",
    "cw-units",
    "cw-customers",
    "cw-pipeline",
    "cw-backtest",
    "cw-replay",
    "cw-pipeline-prom",
}


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema_rs.Draft7Validator(json.loads(SCHEMA.read_text()))


def test_every_dashboard_validates_against_the_vendored_schema(validator: Any) -> None:
    assert "Apache License" in (SCHEMA.parent / "LICENSE").read_text()
    for board in build_all(load_plan(None)):
        errors = [
            f"{e.instance_path}: {e.message[:200]}" for e in validator.iter_errors(to_json(board))
        ]
        assert errors == [], board.uid


def test_the_schema_rejects_a_broken_dashboard(validator: Any) -> None:
    """The validator is not vacuous: a panel without a type or a stray key fails."""
    data = to_json(build_all(load_plan(None))[0])
    data["panels"][1].pop("type")
    data["unknownKey"] = 1
    assert len(list(validator.iter_errors(data))) >= 2


def test_uids_are_fixed_and_panels_numbered() -> None:
    boards = build_all(load_plan(None))
    assert {b.uid for b in boards} == UIDS
    for board in boards:
        ids = [p.id_val for p in board.panels or []]
        assert ids == list(range(1, len(ids) + 1))


def test_targets_are_clickhouse_sql_on_the_fixed_datasource() -> None:
    """Every dashboard but the Prometheus one (tests/dashboards/test_prometheus_dashboard.py)."""
    for board in build_all(load_plan(None)):
        if board.uid == prometheus.UID:
            continue
        data = to_json(board)
        for panel in data["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": PLUGIN_ID, "uid": DATASOURCE_UID}
            for target in panel["targets"]:
                assert target["editorType"] == "sql"
                assert target["format"] in (0, 1)
                assert target["rawSql"].strip()
        assert len(list(queries(board))) >= 2


def test_json_is_deterministic_and_the_committed_export_is_current(tmp_path: Path) -> None:
    plan = load_plan(None)
    first = [dumps(b) for b in build_all(plan)]
    assert first == [dumps(b) for b in build_all(plan)]
    written = export(tmp_path, plan)
    assert {p.name for p in written} == {f"{uid}.json" for uid in UIDS}
    for path in written:
        text = path.read_text()
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
        assert (EXPORTED / path.name).read_text() == text, (
            f"deploy/grafana/dashboards/{path.name} is stale: run "
            "`chainwatch dashboards export deploy/grafana/dashboards`"
        )


def test_open_alerts_link_to_the_order_drill_down() -> None:
    overview = to_json(build_all(load_plan(None))[0])
    table = next(p for p in overview["panels"] if p.get("title") == "Open alerts")
    links = table["fieldConfig"]["defaults"]["links"]
    assert links[0]["url"].startswith("/d/cw-order/")
    assert "var-order_id=${__data.fields.order_id}" in links[0]["url"]
    drill = next(to_json(b) for b in build_all(load_plan(None)) if b.uid == "cw-order")
    assert [v["name"] for v in drill["templating"]["list"]] == ["order_id"]
