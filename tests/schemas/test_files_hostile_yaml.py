"""What YAML itself can do to the files a user writes, as each command reads its file
(schemas/files.py): aliases that expand, YAML 1.1's numbers, types no file takes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from schemas.epcis import EpcisMappingError, load_epcis_mapping
from schemas.files import ConfigYamlError, load_config_yaml
from schemas.import_mapping import load_mapping
from schemas.plan import PlanError, load_plan
from sinks.webhooks.subscriptions import load_subscriptions
from streams.ingest.auth import TokenRegistry, TokensFileError

ROOT = Path(__file__).resolve().parents[2]
PLAN = (ROOT / "schemas" / "plans" / "knitwear.yaml").read_text(encoding="utf-8")
SECRET = "s3cr3t-s3cr3t-s3cr3t"


def laughs(levels: int = 9) -> str:
    """A flow list whose last anchor stands for 9**levels strings, in a few hundred bytes."""
    anchors = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    anchors += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(anchors) + "]"


def test_aliases_that_expand_past_the_limit_are_one_line_and_a_few_more_are_taken() -> None:
    with pytest.raises(ConfigYamlError) as caught:
        load_config_yaml(f"x: {laughs()}\n")
    assert str(caught.value).startswith("aliases (*name) add more than 100,000 values")
    assert caught.value.private == str(caught.value)  # our words only, none of the file's
    assert len(load_config_yaml(f"x: {laughs(5)}\n")["x"]) == 5  # 9**5 values: taken
    merged = "base: &b {a: 1}\n" + "".join(f"m{i}: {{<<: *b, n: {i}}}\n" for i in range(500))
    assert load_config_yaml(merged)["m499"] == {"a": 1, "n": 499}


@pytest.mark.parametrize(
    "text", ["x: &a [*a]", "x: &a {k: *a}", "x: &a {<<: *a}", "? &k [*k]\n: 1"]
)
def test_a_value_that_holds_itself_is_refused(text: str) -> None:
    with pytest.raises(ConfigYamlError, match=r"^an alias inside the node it names"):
        load_config_yaml(text)


@pytest.mark.timeout(20)  # the plan's error quoted the value: 9**9 strings, for ever
def test_a_plan_whose_duration_is_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("grace: 0s", f"grace: {laughs()}"), encoding="utf-8")
    with pytest.raises(PlanError, match=r"is not valid YAML: aliases \(\*name\) add more"):
        load_plan(path)


@pytest.mark.timeout(20)  # the role's enum error quoted the value
def test_a_tokens_file_says_the_aliases_are_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    path.write_text(
        f"tokens:\n  - {{name: {SECRET}, sha256: {digest}, role: {laughs()}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(TokensFileError) as caught:
        TokenRegistry.load(path)
    assert "aliases (*name) add more than 100,000 values" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("written", "loaded"),
    [("010", "010"), ("0777", "0777"), ("1:30", "1:30"), ("1:30.5", "1:30.5"), ("0x1f", 31)],
)
def test_yaml_1_1_octal_and_base_60_numbers_are_the_text_written(
    written: str, loaded: object
) -> None:
    assert load_config_yaml(f"x: {written}\n{written}: y\n") == {"x": loaded, loaded: "y"}


def test_an_endpoint_s_concurrency_of_010_is_ten_not_eight(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        "endpoints:\n  - {name: ops, url: 'https://x.example.com/', format: slack, "
        "concurrency: 010}\n",
        encoding="utf-8",
    )
    assert load_subscriptions(path, ["*.example.com"]).endpoints[0].concurrency == 10


def test_an_import_value_map_s_010_matches_the_cell_010_not_8(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "kind: unit-status\ncolumns: {unit_id: m, status: s, event_time: t}\n"
        "values:\n  status: {010: down, 1:30: up}\n",
        encoding="utf-8",
    )
    assert load_mapping(path).values["status"] == {"010": "down", "1:30": "up"}


@pytest.mark.parametrize(
    "tag", ["!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!!binary YQ=="]
)
def test_types_no_file_takes_are_refused(tag: str) -> None:
    """`route: !!set {...}` was a list in the hash seed's order."""
    name = tag.split()[0]
    with pytest.raises(ConfigYamlError) as caught:
        load_config_yaml(f"route: {tag}\n")
    assert str(caught.value) == f"a {name} value is not taken in this file (line 1, column 8)"


def test_a_long_key_written_twice_is_quoted_shortened() -> None:
    key = "k" * 100_000
    with pytest.raises(ConfigYamlError) as caught:
        load_config_yaml(f"? {key}\n: 1\n? {key}\n: 2\n")
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "is empty"),
        ("# nothing yet\n\n", "is empty"),
        ("- name: a\n", "expected a mapping"),
        ("tokens\n", "expected a mapping"),
    ],
)
def test_an_empty_or_listless_tokens_file_or_epcis_mapping_says_so(
    text: str, said: str, tmp_path: Path
) -> None:
    """Both said `key '<file>': Input should be a valid dictionary or instance of
    TokensFile` (EpcisMapping): pydantic's class names, not what is wrong with the file."""
    path = tmp_path / "file.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TokensFileError) as tokens:
        TokenRegistry.load(path)
    with pytest.raises(EpcisMappingError) as mapping:
        load_epcis_mapping(path)
    for message in (str(tokens.value), str(mapping.value)):
        assert said in message
        assert str(path) in message
        assert "<file>" not in message
        assert "instance of" not in message
    if said == "is empty":
        assert "chainwatch tokens create NAME --role ROLE --file" in str(tokens.value)
        assert "epcis-mapping.example.yaml" in str(mapping.value)
