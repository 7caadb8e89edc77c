"""The alerting rules on Chainwatch itself (deploy/prometheus/alerts.yml) can fire.

Prometheus does not run here, so what would make a rule silently never fire is
checked instead: an expression that does not parse (Prometheus refuses the whole
file), a series no process exports, a label the series does not carry (a `by` or
`on` over a missing label groups everything into one; a matcher on it matches
nothing), a label value the code never gives (`outcome="gaveup"`). And each rule
leads somewhere: its runbook part in docs/observability.md, and compose mounts the
file where prometheus.yml looks for it; deploy/k8s/prometheus-rule.yaml carries the
same groups for the Prometheus Operator.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import promql_parser
import pytest
import yaml
from exported_metrics import label_names, registries_by_process

from schemas.dead_letter import ReasonCode
from schemas.topics import INPUT_TOPICS
from sinks.webhooks.records import Outcome
from streams.ingest.openapi import ERROR_CODES

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy/k8s/prometheus-rule.yaml"
SCENARIOS = Path(__file__).with_name("alert_rules_promtool.yml")
PROMTOOL = shutil.which("promtool")
DOC = ROOT / "docs/observability.md"
SCRAPE_LABELS = {"instance", "job"}
"""Labels Prometheus adds to every scraped series."""

VALUES: dict[tuple[str, str], set[str]] = {
    ("chainwatch_worker_dead_letters_total", "reason"): {r.value for r in ReasonCode},
    ("chainwatch_worker_records_total", "topic"): set(INPUT_TOPICS),
    ("chainwatch_webhook_deliveries_total", "outcome"): set(get_args(Outcome)),
    ("chainwatch_gateway_errors_total", "error"): set(ERROR_CODES),
}
"""The values a rule may match per series and label, from the code that sets them (a rule
matching another label's values needs its set here)."""


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _selectors(node: Any) -> Iterator[Any]:
    """Every vector selector under `node` (the expression's tree, any depth)."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
        return
    if isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
        return
    children: list[Any] = []
    if isinstance(node, promql_parser.Call):
        children = list(node.args)
    elif isinstance(node, promql_parser.BinaryExpr):
        children = [node.lhs, node.rhs]
    elif hasattr(node, "expr"):
        children = [node.expr]
    for child in children:
        yield from _selectors(child)


def _groupings(node: Any) -> Iterator[tuple[Any, list[str]]]:
    """Each `by`/`on` (or `without`/`ignoring`) with the labels it names, and the node."""
    if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
        yield node, list(node.modifier.labels)
    if isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
        matching = node.modifier.matching
        if matching is not None:
            yield node, list(matching.labels)
    if isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from _groupings(arg)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from _groupings(node.lhs)
        yield from _groupings(node.rhs)
    elif hasattr(node, "expr"):
        yield from _groupings(node.expr)


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, frozenset[str]]:
    """Label names of every series any process exports."""
    found: dict[str, frozenset[str]] = {}
    for registry in registries_by_process(tmp_path_factory.mktemp("metrics")).values():
        found.update(label_names(registry))
    return found


def test_every_rule_has_a_name_a_severity_and_its_runbook_part() -> None:
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) >= 10
    headings = re.findall(
        r"^### (\w+)$", DOC.read_text().split("## Alerting on Chainwatch")[1], re.M
    )
    assert headings == names  # one part per rule, in the file's order
    for rule in rules:
        assert rule["alert"].startswith("Chainwatch")
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"], rule["alert"]
        assert notes["description"], rule["alert"]
        assert notes["runbook_url"] == f"docs/observability.md#{rule['alert'].lower()}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_every_expression_reads_series_labels_and_values_that_exist(
    rule: dict[str, Any], labels: dict[str, frozenset[str]]
) -> None:
    expr = promql_parser.parse(rule["expr"])  # raises on what Prometheus would refuse
    selectors = list(_selectors(expr))
    assert selectors
    for selector in selectors:
        name = selector.name
        if name == "up":
            continue
        assert name in labels, f"{name} is exported by no process"
        carried = labels[name] | SCRAPE_LABELS
        for matcher in selector.matchers.matchers:
            assert matcher.name in carried, (name, matcher.name)
            known = VALUES.get((name, matcher.name))
            if matcher.name in SCRAPE_LABELS:
                continue
            assert known is not None, f"{name}{{{matcher.name}}}: list its values in VALUES"
            alternatives = matcher.value.split("|") if "Re" in str(matcher.op) else [matcher.value]
            for value in alternatives:
                assert value.replace("\\.", ".") in known, (name, matcher.name, value)
    for node, grouped in _groupings(expr):
        for selector in _selectors(node):
            if selector.name != "up":
                missing = set(grouped) - labels[selector.name] - SCRAPE_LABELS
                assert not missing, (selector.name, missing)


def test_a_rule_naming_a_label_its_series_lacks_is_caught(
    labels: dict[str, frozenset[str]],
) -> None:
    """The checks above fail on the mistakes they are there for."""
    bad = {
        "alert": "X",
        "expr": 'sum by (endpoint) (rate(chainwatch_worker_dead_letters_total{reason="nope"}[5m]))',
    }
    with pytest.raises(AssertionError):
        test_every_expression_reads_series_labels_and_values_that_exist(bad, labels)
    with pytest.raises(AssertionError):
        test_every_expression_reads_series_labels_and_values_that_exist(
            {"alert": "X", "expr": "chainwatch_worker_nothing_total > 0"}, labels
        )
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum by (endpoint (rate(chainwatch_worker_ready[5m]))")


def test_prometheus_loads_the_rules_compose_mounts_beside_its_config() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]  # relative to the config file
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]


def test_the_prometheus_operators_rule_carries_the_same_groups() -> None:
    """deploy/k8s/prometheus-rule.yaml is alerts.yml for the Prometheus Operator: a rule
    changed in one file only would page one installation and not the other."""
    rules = yaml.safe_load(RULES.read_text())
    assert list(rules) == ["groups"]  # the file holds nothing else to carry
    (resource,) = [d for d in yaml.safe_load_all(PROMETHEUS_RULE.read_text()) if d]
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert list(resource["spec"]) == ["groups"]
    assert resource["spec"]["groups"] == rules["groups"], (
        "copy deploy/prometheus/alerts.yml's groups into the PrometheusRule's spec"
    )


def test_every_alert_has_a_scenario_where_it_fires() -> None:
    """The promtool scenarios below cover every rule (a new rule needs its own)."""
    tests = yaml.safe_load(SCENARIOS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in _rules()}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_rules_and_each_alert_fires_when_it_should(tmp_path: Path) -> None:
    """Prometheus's own checker and rule tests, where promtool is installed (not on the CI
    machines): the file as Prometheus loads it, then each scenario of
    alert_rules_promtool.yml on the rules without their annotations (promtool compares
    annotations exactly: the scenarios say when an alert fires and with which labels)."""
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(SCENARIOS, tmp_path / SCENARIOS.name)
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", SCENARIOS.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
