"""Counts and lists the docs state about the repository match the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from docs_helpers import ROOT
from exported_metrics import exported_by_process, label_names, registries_by_process

from chainwatch.cli import app

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


#: docs whose option tables describe one command (first cell `--option ...`)
OPTION_TABLES = {
    "docs/replay.md": ["replay"],
    "docs/import.md": ["import"],
    "docs/simulator.md": ["simulate"],
    "docs/backtest.md": ["backtest"],
}


def _command(path: list[str]) -> Any:
    command: Any = typer.main.get_command(app)  # typer vendors its own click: duck-typed
    for name in path:
        command = command.commands[name]
    return command


def _options(command: Any) -> set[str]:
    return {o for p in command.params for o in [*p.opts, *p.secondary_opts] if o.startswith("--")}


@pytest.mark.parametrize("doc", sorted(OPTION_TABLES))
def test_an_option_table_lists_exactly_the_command_s_options(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    documented = set()
    for row in re.findall(r"^\| (`--.*?) \|", text, re.M):
        documented |= set(re.findall(r"`(--[\w-]+)", row)) | set(re.findall(r" (--[\w-]+)", row))
    documented |= set(re.findall(r"or `(--[\w-]+) ", text))  # `--format csv|...` in a row's text
    actual = _options(_command(OPTION_TABLES[doc])) - {"--help", "--no-keep-topics"}
    assert documented - actual == set(), f"{doc} documents options the command lacks"
    assert actual - documented == set(), f"{doc} leaves options out of its table"


@pytest.mark.slow
def test_the_readme_commands_table_names_real_commands_and_options() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    checked = 0
    for span in re.findall(r"`(chainwatch [^`]+)`", section):
        words = span.replace("\\|", "|").split()[1:]
        path = []
        for word in words:
            if not re.fullmatch(r"[a-z][a-z|-]*", word):
                break
            path.append(word)
        *parents, last = path
        for alternative in last.split("|"):
            command = _command([*parents, alternative])
            unknown = set(re.findall(r"--[\w-]+", span)) - _options(command)
            assert not unknown, f"README `{span}`: no option {sorted(unknown)}"
            checked += 1
    assert checked >= 20


DOCS = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: files the docs tell the user to create (git-ignored), not in the repository
USER_CREATED = {"deploy/.env", "deploy/gateway/tokens.yaml", "deploy/webhooks/subscriptions.yaml"}
#: made by the first run (the Kafka jars `chainwatch kafka start` fetches): absent in a fresh
#: clone until a broker fixture has started, so the check failed when it ran first
FIRST_RUN_CREATED = {"deploy/kafka/lib/"}


def test_the_paths_users_and_first_runs_create_are_git_ignored() -> None:
    """What the docs may name without it being in the repository must never be committed."""
    ignored = set((ROOT / ".gitignore").read_text(encoding="utf-8").split())
    assert ignored >= USER_CREATED | FIRST_RUN_CREATED


def _without_code_blocks(text: str) -> str:
    """A Markdown text with its fenced blocks blanked, not cut out: the lines after
    a block keep their numbers (a finding's `doc:line` is that line)."""
    return re.sub(
        r"^```.*?^```", lambda block: "\n" * block[0].count("\n"), text, flags=re.S | re.M
    )


def _headings(doc: Path) -> list[str]:
    """The headings of a Markdown file, without their `#`s (code blocks left out)."""
    text = _without_code_blocks(doc.read_text(encoding="utf-8"))
    return [h.strip() for h in re.findall(r"^#+ (.*)$", text, re.M)]


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (code blocks left out)."""
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in _headings(doc)}


def test_every_repository_path_the_docs_name_exists() -> None:
    pattern = re.compile(
        r"`((?:deploy|examples|bench|schemas|sinks|streams|chainwatch|tests|dashboards|docs)"
        r"/[\w./*-]*)`"
    )
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in pattern.finditer(text):
            path = match.group(1).rstrip(".")
            found = any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
            if not found and path not in USER_CREATED | FIRST_RUN_CREATED:
                missing.append(
                    f"{doc.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1} {path}"
                )
    assert not missing, missing


def test_every_link_between_the_docs_reaches_its_file_and_heading() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"\w+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


#: where code and docs cite a section of the engine's performance documents by its
#: title: `docs/performance-engine-history.md, "Records moved in bulk"` (the title may
#: wrap, in a docstring, a comment or a paragraph)
SECTION_REFERENCE = re.compile(
    r"(performance-engine(?:-history)?\.md)(?:\]\([^)]*\))?,\s+\"([^\"]+)\""
)
CITING = ["bench", "chainwatch", "dashboards", "docs", "schemas", "sinks", "streams"]


def _titles(doc: str) -> list[str]:
    return _headings(ROOT / "docs" / doc)


def _title(quoted: str) -> str:
    """A quoted title as one line: wraps joined, comment markers of wrapped lines dropped."""
    return " ".join(w for w in quoted.split() if w != "#")


def test_every_cited_section_of_the_performance_documents_exists() -> None:
    titles = {d: _titles(d) for d in ("performance-engine.md", "performance-engine-history.md")}
    files = [ROOT / "README.md"]
    for top in CITING:
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in {".py", ".md", ".yaml"}]
    cited = 0
    for path in files:
        for doc, quoted in SECTION_REFERENCE.findall(path.read_text(encoding="utf-8")):
            title = _title(quoted)
            assert any(t.startswith(title) for t in titles[doc]), f"{path}: {doc}, {title!r}"
            cited += 1
    assert cited >= 5, "the pattern no longer finds the citations"


def test_the_performance_page_names_only_sections_its_log_has() -> None:
    """Its tables of changes and of ideas not kept end in a column of the log's sections."""
    history = _titles("performance-engine-history.md")
    page = (ROOT / "docs" / "performance-engine.md").read_text(encoding="utf-8")
    rows = 0
    for table in re.findall(r"^\|[^\n]*\| the log's section \|\n(?:\|[^\n]*\n)+", page, re.M):
        for row in table.splitlines()[2:]:
            last = row.rstrip(" |").rsplit(" | ", 1)[-1]
            for title in re.findall(r"\"([^\"]+)\"", last):
                assert any(t.startswith(title) for t in history), f"{title!r} ({row[:60]}...)"
            rows += 1
    assert rows >= 20, "the tables of changes and of ideas not kept"


def test_every_metric_the_docs_name_is_exported_by_its_process(tmp_path: Path) -> None:
    """An operator copies a series name from the docs into a Prometheus rule or query:
    a name no process exports (renamed, misspelt) would alert on nothing, silently."""
    exported = exported_by_process(tmp_path)
    named = 0
    unknown = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in re.finditer(r"\bchainwatch_([a-z]+)_\w*[a-z]", text):
            named += 1
            if match.group(0) not in exported.get(match.group(1), set()):
                line = text.count("\n", 0, match.start()) + 1
                unknown.append(f"{doc.relative_to(ROOT)}:{line} {match.group(0)}")
    assert named >= 50
    assert not unknown, unknown


def test_every_label_the_docs_give_a_metric_is_one_it_carries(tmp_path: Path) -> None:
    """A label named with its series (`chainwatch_webhook_silenced_total{endpoint}`, a
    matcher `{outcome="failed"}`) is one the series carries, and the worker table's
    labels column lists exactly its series' labels: a `sum by` over a label the series
    lacks sums everything into one, a matcher on it matches nothing."""
    carried: dict[str, frozenset[str]] = {}
    for registry in registries_by_process(tmp_path).values():
        carried.update(label_names(registry))
    wrong = []
    named = 0
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in re.finditer(r"\b(chainwatch_\w+)\{([^}]*)\}", text):
            labels = {part.split("=")[0].strip() for part in match[2].split(",")}
            named += 1
            if not labels <= carried.get(match[1], frozenset()):
                line = text.count("\n", 0, match.start()) + 1
                wrong.append(f"{doc.relative_to(ROOT)}:{line} {match[0]}")
        for name, column in re.findall(r"^\| `(chainwatch_\w+)` \| \w+ \| ([^|]*) \|", text, re.M):
            named += 1
            if set(re.findall(r"`(\w+)`", column)) != carried.get(name):
                wrong.append(f"{doc.relative_to(ROOT)}: {name}'s labels {column.strip()!r}")
    assert named >= 40, "the patterns no longer find the labels"
    assert not wrong, wrong


def test_the_simulator_page_lists_every_anomaly_with_its_default_rate() -> None:
    """A user tunes `--anomaly NAME=RATE` from this table: a name or a default it gets
    wrong is a run that is not the one they meant."""
    from simulator.config import AnomalyRates

    text = (ROOT / "docs" / "simulator.md").read_text(encoding="utf-8")
    table = text.split("**Injected anomalies**", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `(\w+)` \| ([0-9.]+)\b", table, re.M)
    assert {name: float(rate) for name, rate in rows} == AnomalyRates().model_dump()


def _shown_default(cell: str) -> object:
    """A default as docs/ingest.md's settings table writes it: `8 MiB`, `10`, `` `x` ``, `-`."""
    cell = cell.strip()
    if cell == "-" or cell.startswith("`<"):  # none, or one derived from another setting
        return None
    if cell.startswith("`") and cell.endswith("`"):
        cell = cell[1:-1]
        if not re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", cell):
            return cell
    number, _, unit = cell.partition(" ")
    return float(number) * {"": 1, "KiB": 2**10, "MiB": 2**20}[unit]


def test_the_gateway_page_s_settings_table_lists_every_setting_with_its_default() -> None:
    """The README's table is checked against the settings object; this one (short names,
    several to a row) drifted apart from it unseen."""
    from streams.ingest.settings import GatewaySettings

    text = (ROOT / "docs" / "ingest.md").read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    shown: dict[str, object] = {}
    for names, defaults in re.findall(
        r"^\| (`[A-Z_]+`(?:, `[A-Z_]+`)*) \| ([^|]+) \|", section, re.M
    ):
        keys = re.findall(r"`([A-Z_]+)`", names)
        values = (
            [_shown_default(d) for d in defaults.split(", ")]
            if len(keys) > 1
            else [_shown_default(defaults)]
        )
        assert len(values) == len(keys), names
        shown |= {k.lower(): v for k, v in zip(keys, values, strict=True)}
    fields = GatewaySettings.model_fields
    assert sorted(shown) == sorted(fields)
    actual = {name: field.default for name, field in fields.items()}
    wrong = {
        name: (value, actual[name])
        for name, value in shown.items()
        if value != (float(actual[name]) if isinstance(value, float) else actual[name])
    }
    assert wrong == {}, "docs/ingest.md's settings (shown, actual default)"


#: `schemas.validation.decode_input`: a module of ours, or a name in one, in backticks
PYTHON_NAME = re.compile(
    r"`((?:chainwatch|streams|sinks|schemas|dashboards|simulator)(?:\.[A-Za-z_]\w*)+)(?:\([^`]*\))?`"
)


def test_every_python_name_the_docs_give_exists() -> None:
    """A reader looks up `streams.rules.oracle.run_scenario` to see what the docs say;
    a name moved or renamed leaves them nothing to find."""
    import importlib

    missing = []
    named = 0
    for doc in DOCS:
        for dotted in PYTHON_NAME.findall(doc.read_text(encoding="utf-8")):
            named += 1
            parts = dotted.split(".")
            for cut in range(len(parts), 0, -1):  # the longest module prefix, then attributes
                try:
                    found: object = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for attribute in parts[cut:]:
                        found = getattr(found, attribute)
                except AttributeError:
                    missing.append(f"{doc.relative_to(ROOT)}: {dotted}")
                break
            else:
                missing.append(f"{doc.relative_to(ROOT)}: {dotted}")
    assert named >= 10, "the pattern no longer finds the names"
    assert not missing, missing


def _commands_in_prose(text: str) -> list[tuple[int, str]]:
    """Each `chainwatch ...` in backticks outside the shell blocks, with its line."""
    prose = _without_code_blocks(text)
    return [
        (prose.count("\n", 0, match.start()) + 1, match[1].replace("\\|", "|"))
        for match in re.finditer(r"`(?:\.venv/bin/)?(chainwatch [^`]+)`", prose)
    ]


def test_a_command_in_the_docs_text_is_reported_at_its_own_line() -> None:
    text = "Run `chainwatch sink`.\n\n```sh\nchainwatch kafka start\n```\n\nthen `chainwatch sql`\n"

    assert _commands_in_prose(text) == [(1, "chainwatch sink"), (7, "chainwatch sql")]


def test_every_command_the_docs_name_in_their_text_exists_with_its_options() -> None:
    """The shell blocks and the README's table are parsed elsewhere; a command in a
    sentence (`chainwatch replay --sink`, `chainwatch gateway hash-token`) is what a
    reader copies as often, and an option renamed left it behind."""
    root: Any = typer.main.get_command(app)
    wrong = []
    named = 0
    for doc in DOCS:
        for line, span in _commands_in_prose(doc.read_text(encoding="utf-8")):
            command, words = root, span.split()[1:]
            while words and words[0] in getattr(command, "commands", {}):
                command = command.commands[words.pop(0)]
            where = f"{doc.relative_to(ROOT)}:{line}"
            if command is root or (
                hasattr(command, "commands") and words and re.fullmatch(r"[a-z][a-z-]*", words[0])
            ):
                wrong.append(f"{where} `{span}`: no such command")
                continue
            named += 1
            unknown = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", span)) - _options(command)
            if unknown:
                wrong.append(f"{where} `{span}`: no option {sorted(unknown)}")
    assert named >= 100, "the pattern no longer finds the commands"
    assert not wrong, wrong


@pytest.mark.parametrize("doc", ["README.md", "docs/observability.md"])
def test_the_docs_give_the_stop_deadlines_the_processes_set(doc: str, tmp_path: Path) -> None:
    """The notifier's and the gateway's stop deadlines as the docs write them,
    `webhooks.timeout_s` + N s and `gateway.shutdown_grace_s` + N s: the README still
    said + 17 s for the notifier once its consumer's stop was counted (+ 32 s)."""
    from chainwatch.commands import gateway
    from chainwatch.notify_runner import stop_timeout_s
    from chainwatch.settings import Settings

    long = 100  # past `engine.stop_timeout_s`: the deadline is the graceful stop's
    settings = Settings(
        data_dir=tmp_path, webhooks={"timeout_s": long}, gateway={"shutdown_grace_s": long}
    )
    text = " ".join((ROOT / doc).read_text(encoding="utf-8").split())
    said = {
        name: [int(n) for n in re.findall(rf"`{re.escape(name)}` \+ (\d+) s", text)]
        for name in ("webhooks.timeout_s", "gateway.shutdown_grace_s")
    }
    assert said == {
        "webhooks.timeout_s": [stop_timeout_s(settings) - long],
        "gateway.shutdown_grace_s": [gateway.stop_timeout_s(settings) - long],
    }


def test_the_sinks_page_says_how_late_a_webhook_retry_may_go_out() -> None:
    """A retry waits for a round of the silences begun after its backoff, and a round for
    a fetch of the silence reader begun in the round before (paused between rounds, it
    has no other), which the broker holds up to its `fetch_max_wait_ms`: a round under
    way and the next, about twice that. The docs said nothing of it (tests with a 50 ms
    backoff saw retries 0.5 s apart, aiokafka's default), then said ~1 s."""
    from sinks.webhooks.silence_follower import FETCH_MAX_WAIT_MS

    text = " ".join((ROOT / "docs" / "sinks.md").read_text(encoding="utf-8").split())
    section = text[text.index("### Retries and giving up") :]
    assert f"up to about {2 * FETCH_MAX_WAIT_MS / 1000:g} s, more while" in section
    assert f"holds up to {FETCH_MAX_WAIT_MS / 1000:g} s when the topic has nothing new" in section


def _kafka_tool_lines(text: str) -> list[tuple[int, str]]:
    """Each Kafka tool command the text gives (`kafka-consumer-groups.sh --...`), in
    backticks or on a shell block's line, with its line; a wrapped span joined."""
    prose = _without_code_blocks(text)
    found = [
        (prose.count("\n", 0, match.start()) + 1, " ".join(match[1].split()))
        for match in re.finditer(r"`(kafka-[a-z-]+\.sh --[^`]+)`", prose)
    ]
    for block in re.finditer(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        first = text.count("\n", 0, block.start(1)) + 1
        for offset, line in enumerate(block[1].splitlines()):
            if re.match(r"kafka-[a-z-]+\.sh --", line):
                found.append((first + offset, line))
    return found


def test_every_kafka_tool_command_of_the_docs_names_the_broker() -> None:
    """Kafka's own tools refuse to run without `--bootstrap-server` (there is no default,
    and the project's broker is not on Kafka's 9092): sinks.md's `kafka-consumer-groups.sh
    --group ... --reset-offsets --to-latest --execute`, copied as written to start a new
    webhook endpoint at the end of `alerts`, failed with the tool's usage. A line that
    elides its options (`--alter ...`) is left to the reader."""
    text = "`kafka-consumer-groups.sh --group\n  g --execute` and `kafka-configs.sh --alter ...`\n"
    assert _kafka_tool_lines(text) == [
        (1, "kafka-consumer-groups.sh --group g --execute"),
        (2, "kafka-configs.sh --alter ..."),
    ]
    lines = [
        (doc, line, command)
        for doc in DOCS
        for line, command in _kafka_tool_lines(doc.read_text(encoding="utf-8"))
    ]
    assert len(lines) >= 3, "the pattern no longer finds the commands"
    unnamed = [
        f"{doc.relative_to(ROOT)}:{line} `{command}`"
        for doc, line, command in lines
        if "--bootstrap-server " not in command and "..." not in command
    ]
    assert not unnamed, unnamed


def test_the_help_of_silences_expire_says_what_happens_to_the_held_alerts() -> None:
    """`--help` is what the night shift reads before ending a window: it said the held
    alerts were "sent again from their next change", as before the notifier released
    them; alert-channels.md (and the notifier since) sends an alert a silence held that
    is still open when the silence ends, once."""
    root: Any = typer.main.get_command(app)
    expire = root.commands["silences"].commands["expire"]
    doc = " ".join((ROOT / "docs" / "alert-channels.md").read_text(encoding="utf-8").split())

    assert "an alert it held that is still open is sent then" in doc
    assert "an alert it held that is still open is sent then, once" in expire.help
    assert "next change" not in expire.help
