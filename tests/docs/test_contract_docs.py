"""docs/contract.md and docs/rules.md explain the contract in the project's words; they
must name every field and allowed value of the generated JSON Schemas, every key of the
plan and every alert type, and show the shipped plan as it is."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from docs_helpers import ROOT

from schemas.alerts import AlertType
from schemas.plan import SlaPlan, load_plan, plan_from_mapping
from schemas.scans import MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_TEXT, MAX_ATTRIBUTES

CONTRACT = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
RULES = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
SCHEMAS = sorted((ROOT / "schemas" / "json").glob("*.schema.json"))


def _names(schema: dict[str, Any]) -> set[str]:
    """Field names and enum values of a schema and its definitions."""
    found: set[str] = set()
    for node in [schema, *schema.get("$defs", {}).values()]:
        found |= set(node.get("properties", {}))
        found |= {str(v) for v in node.get("enum", [])}
    return found


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_contract_md_names_every_field_and_value_of_the_schema(path: Any) -> None:
    if path.name == "plan.schema.json":
        text, doc = RULES, "rules.md"
    else:
        text, doc = CONTRACT, "contract.md"
    missing = sorted(n for n in _names(json.loads(path.read_text())) if f"`{n}`" not in text)
    assert not missing, f"docs/{doc} does not mention {missing} of {path.name}"


def test_rules_md_names_every_alert_type_and_plan_key() -> None:
    missing = [t.value for t in AlertType if f"`{t.value}`" not in RULES]
    missing += [k for k in SlaPlan.model_fields if f"`{k}`" not in RULES]
    assert not missing


def test_rules_md_shows_the_shipped_plan() -> None:
    block = re.search(r"```yaml\n(.*?)```", RULES, re.S)
    assert block is not None
    assert plan_from_mapping(yaml.safe_load(block.group(1))) == load_plan(None)


def test_the_docs_cite_no_spec_files_missing_from_the_repository() -> None:
    docs = [ROOT / "README.md", ROOT / "examples" / "README.md", *(ROOT / "docs").glob("*.md")]
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        assert not re.search(r"\b(RULES|CONTRACT)\.md\b", text), f"{doc.name} cites the spec"


def test_contract_md_says_which_customer_fields_are_required() -> None:
    schema = json.loads((ROOT / "schemas" / "json" / "customer.schema.json").read_text())
    sentence = CONTRACT.split("are required;", 1)[0].rsplit("\n\n", 1)[1]
    assert set(re.findall(r"`([a-z_]+)`", sentence)) == set(schema["required"])


def test_contract_md_states_the_attribute_limits_the_model_enforces() -> None:
    text = " ".join(CONTRACT.split())
    assert f"at most {MAX_ATTRIBUTES} keys of 1-{MAX_ATTRIBUTE_KEY} characters" in text
    assert f"a string of at most {MAX_ATTRIBUTE_TEXT} characters" in text
