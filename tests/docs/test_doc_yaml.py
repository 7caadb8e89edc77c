"""Every webhook subscriptions file, EPCIS mapping and import mapping shown in the docs
loads with the loader the command uses; a block that names its file under `deploy/`
or `examples/` shows that file's content."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from docs_helpers import ROOT

from schemas.epcis import load_epcis_mapping
from schemas.import_mapping import load_mapping
from sinks.webhooks.subscriptions import load_subscriptions

DOC_FILES = [ROOT / "README.md", ROOT / "examples" / "README.md", *(ROOT / "docs").glob("*.md")]


@dataclass(frozen=True)
class YamlBlock:
    file: str
    line: int
    text: str
    names: str | None  # the repository file the text before the block names with a colon


def _blocks() -> list[YamlBlock]:
    found = []
    for path in sorted(DOC_FILES):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
            named = re.fullmatch(r"`((?:deploy|examples)/[\w./-]+\.yaml)`:", before)
            found.append(
                YamlBlock(
                    str(path.relative_to(ROOT)),
                    text.count("\n", 0, match.start()) + 1,
                    match.group(1),
                    named.group(1) if named else None,
                )
            )
    return found


def _kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if "endpoints" in data:
        return "subscriptions"
    if "read_points" in data:
        return "epcis"
    if "columns" in data:
        return "import"
    return None


BLOCKS = [b for b in _blocks() if _kind(yaml.safe_load(b.text)) is not None]


def test_the_docs_show_each_kind_of_file() -> None:
    kinds = [_kind(yaml.safe_load(b.text)) for b in BLOCKS]
    assert kinds.count("subscriptions") >= 5
    assert kinds.count("epcis") >= 2
    assert kinds.count("import") >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.file}:{b.line}")
def test_a_shown_file_loads_as_the_command_loads_it(
    block: YamlBlock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in re.findall(r"(?:secret_env|routing_key_env): (\w+)", block.text):
        # the secrets a user exports first (a Standard Webhooks secret is base64 after whsec_)
        monkeypatch.setenv(name, "whsec_" + base64.b64encode(b"k" * 32).decode())
    path = tmp_path / "shown.yaml"
    path.write_text(block.text, encoding="utf-8")
    kind = _kind(yaml.safe_load(block.text))
    if kind == "subscriptions":
        load_subscriptions(path)
    elif kind == "epcis":
        load_epcis_mapping(path)
    else:
        load_mapping(path)
    if block.names is not None:
        shown = yaml.safe_load(block.text)
        assert shown == yaml.safe_load((ROOT / block.names).read_text(encoding="utf-8")), (
            f"{block.file}:{block.line} differs from {block.names}"
        )
