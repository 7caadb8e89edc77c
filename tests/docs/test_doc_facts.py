"""Counts and lists the docs state about the repository match the repository."""

from __future__ import annotations

import re

from docs_helpers import ROOT

NUMBERS = {"six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}


def test_the_docs_count_and_list_the_dashboards_there_are() -> None:
    uids = sorted(p.stem for p in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    said = re.search(r"(\w+) Grafana dashboards are built as code", readme)
    assert said is not None
    assert NUMBERS.get(said.group(1).lower()) == len(uids), f"README says {said.group(1)}"
    dashboards_md = (ROOT / "docs" / "dashboards.md").read_text(encoding="utf-8")
    listed = sorted(re.findall(r"^\| `(cw-[\w-]+)` \|", dashboards_md, re.M))
    assert listed == uids, "docs/dashboards.md's table of dashboards"
    republished = re.search(r"replaces the same (\w+) dashboards", dashboards_md)
    assert republished is not None
    assert NUMBERS.get(republished.group(1)) == len(uids)
