"""The Prometheus dashboard reads only series the processes export, from the provisioned
datasource, and the compose Prometheus scrapes each process where compose serves it.

A running worker is checked too: tests/engine/test_engine_live_clock.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import pytest
import yaml
from exported_metrics import exported_by_process

from dashboards import prometheus
from dashboards.export import build_all, to_json
from schemas.plan import load_plan
from streams.ingest.openapi import ERROR_CODES, INGEST_ERRORS

ROOT = Path(__file__).resolve().parents[2]


def _board() -> object:
    return next(b for b in build_all(load_plan(None)) if b.uid == prometheus.UID)


def test_every_target_is_promql_on_the_provisioned_prometheus() -> None:
    data = to_json(_board())  # type: ignore[arg-type]
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"][0]
    assert provisioned["uid"] == prometheus.DATASOURCE_UID
    assert provisioned["type"] == "prometheus"
    targets = 0
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": prometheus.DATASOURCE_UID}
        for target in panel["targets"]:
            assert re.search(r"\bchainwatch_\w+", target["expr"]), panel["title"]
            # Grafana puts a duration in place of its variables; Prometheus parses the rest
            promql_parser.parse(re.sub(r"\$__(rate_)?interval\b", "5m", target["expr"]))
            targets += 1
    assert targets >= 20


@pytest.mark.slow
def test_every_metric_the_dashboard_queries_is_exported_by_its_process(tmp_path: Path) -> None:
    exported = exported_by_process(tmp_path)
    wanted = prometheus.metric_names(_board())  # type: ignore[arg-type]
    by_process: dict[str, set[str]] = {}
    for name in wanted:
        process = name.split("_")[1]
        assert process in exported, name
        by_process.setdefault(process, set()).add(name)
    assert set(by_process) == set(exported)  # every process has panels
    for process, names in by_process.items():
        assert names <= exported[process], (process, names - exported[process])


def test_the_compose_prometheus_scrapes_every_process_where_compose_serves_it() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    services, env = compose["services"], compose["x-chainwatch"]["environment"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    gateway_port = services["gateway"]["command"][
        services["gateway"]["command"].index("--port") + 1
    ]
    assert targets == {
        f"worker:{env['CHAINWATCH_ENGINE__METRICS_PORT']}",
        f"sink:{env['CHAINWATCH_METRICS_PORT']}",
        f"notifier:{env['CHAINWATCH_METRICS_PORT']}",
        f"gateway:{gateway_port}",
    }
    assert services["worker"]["command"] == ["worker"]
    assert services["notifier"]["command"] == ["notify"]
    assert env["CHAINWATCH_METRICS_HOST"] == "0.0.0.0"  # else only the container's loopback
    assert "172.16.0.0/12" in env["CHAINWATCH_GATEWAY__OPS_NETWORKS"]  # else /metrics: 403
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "ports" not in services["prometheus"]


def test_the_webhooks_row_shows_the_oldest_pending_delivery() -> None:
    """docs/sinks.md says to alert on `chainwatch_webhook_oldest_pending_seconds` (an
    endpoint held up behind a retried delivery), yet no dashboard showed it."""
    row, shown = "", []
    for panel in to_json(_board())["panels"]:  # type: ignore[arg-type]
        if panel["type"] == "row":
            row = panel["title"]
            continue
        exprs = [target["expr"] for target in panel["targets"]]
        if any("chainwatch_webhook_oldest_pending_seconds" in e for e in exprs):
            shown.append((row, panel["fieldConfig"]["defaults"]["unit"], exprs))
    assert shown == [
        ("Webhooks", "s", ["max by (endpoint) (chainwatch_webhook_oldest_pending_seconds)"])
    ]


def test_the_gateway_row_shows_errors_by_their_code() -> None:
    """An operator woken by 503s must see which code they were (`kafka_unavailable`,
    `topic_not_authorized` are the operator's to fix, `publish_timeout` is capacity, the
    rest the clients'): the gateway counts them by code, and no panel showed that."""
    row, shown = "", []
    for panel in to_json(_board())["panels"]:  # type: ignore[arg-type]
        if panel["type"] == "row":
            row = panel["title"]
            continue
        for target in panel["targets"]:
            if re.search(r"chainwatch_gateway_(errors|protocol_refusals)_total", target["expr"]):
                shown.append((row, target["expr"], target["legendFormat"]))
    assert shown == [
        (
            "Ingest gateway",
            f"sum by (error) (rate(chainwatch_gateway_errors_total{prometheus.RATE}))",
            "{{error}}",
        ),
        (
            "Ingest gateway",
            f"sum by (error) (rate(chainwatch_gateway_protocol_refusals_total{prometheus.RATE}))",
            "refused {{error}}",
        ),
    ]


def test_the_errors_panel_names_whose_each_503_is() -> None:
    """The panel says whose each code is, and that the ones it does not name are the
    clients': a 503 it left out (`overloaded`, the gateway at its capacity; `shutting_down`,
    a gateway stopping) told the operator it paged that the clients were at fault."""
    codes_503 = [
        code for code in re.findall(r"`(\w+)`", INGEST_ERRORS["503"]) if code in ERROR_CODES
    ]
    (panel,) = [
        p
        for p in to_json(_board())["panels"]  # type: ignore[arg-type]
        if p["title"] == "Errors per second, by code"
    ]
    named = set(re.findall(r"`(\w+)`", panel["description"]))
    assert "overloaded" in codes_503
    assert [code for code in codes_503 if code not in named] == []
