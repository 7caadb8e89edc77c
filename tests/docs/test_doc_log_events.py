"""The log events the operator pages tell an operator to look for are events the code logs.

A runbook says what to grep for: `sink_paused`, `process_stopped outcome=error`. A name
the code never logs (renamed, misspelt, another process's) sends the reader hunting for a
line that never comes. The code's events are read from its source: the first argument of
every structlog call (`log.warning("sink_paused", ...)`; a stdlib-style `"producer spent:
%s"` also as the words its line begins with). The pages' are the backticked names the
text presents as log lines (`named_as_logged`): not every snake_case name, since table,
column, setting and label names are snake_case too; and names in words, the gateway's
(`kafka unavailable`, `request body too slow`: these were skipped, the pattern took
snake_case and dotted names only). The gateway's page, docs/ingest.md, is one of the pages
(only its events in words were held once; the names of other programs and its metrics
without their `chainwatch_gateway_` prefix, which no test could hold, kept it out). A
line written out with its fields names fields the event's calls give. An event the
text does not present as one is still held by the last test: every event-shaped name
of the pages is in some file of the repository. The messages the pages quote
(`/readyz` reasons such as `"offset commit unanswered for N s"`) are strings the code
makes. The metric names and labels in the docs are checked in test_doc_facts.py.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
from pathlib import Path

from docs_helpers import ROOT

#: the operator pages: where runbooks, probes and reliability notes name log lines
PAGES = [
    "README.md",
    "docs/observability.md",
    "docs/reliability.md",
    "docs/sinks.md",
    "docs/alert-channels.md",
    "docs/ingest.md",
]
CODE = ["chainwatch", "streams", "sinks", "schemas", "simulator"]
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}

#: a backticked event-shaped name: snake_case (`sink_paused`) or dotted (`kafka.unreachable`),
#: alone or as a log line with its fields (`process_stopped outcome="exit 1"`)
SPAN = re.compile(r"`(?P<name>[a-z][a-z0-9]*(?:[._][a-z0-9]+)+)(?P<fields>(?: [^`]*)?)`")
#: a backticked event name of words (the gateway's `kafka unavailable`, `request body too
#: slow`), alone or with a line's fields (`readiness changed ready=false`): only where the
#: words around it say it is a log event, as for `SPAN`'s (commands are words too)
WORDS = re.compile(
    r"`(?!chainwatch\s|make\s)(?P<name>[a-z][a-z0-9-]*(?:\s+[a-z][a-z0-9-]*(?=[\s`]))+)"
    r"(?P<fields>(?:\s+[a-z_]+=[^`]*)?)`"
)
#: what makes it a log event: a line's fields after it, or the words around it saying so
#: (`logs`/`logged as`/`the log says`/`warning`/`error line`/`its last line is`, `..., then`
#: after another event, or `in its log`/`line`/`once`/`per attempt`/`with how long` after)
FIELDS = re.compile(r" [a-z_]+=")
SAID_BEFORE = re.compile(
    r"(?:\blog(?:s|ged|ging)?(?:\s+first)?(?:\s+as)?(?:\s+an?\s+(?:error|warning))?"
    r"|\blogged(?:\s+as\s+an?\s+(?:error|warning))?,"
    r"|\blog\s+says(?:\s+\w+){0,2}:?|\bwarning|\berror(?:\s+line)?"
    r"|\blines?\s+(?:then\s+)?(?:is|say\s+why:)"
    r"|says\s+so:|,?\s+then|always\s+before)\s+\(?$",
    re.I,
)
SAID_AFTER = re.compile(
    r"\s+(?:warning|(?:error\s+)?lines?|in\s+(?:its|the)\s+log|log\s+line|is\s+logged|once"
    r"|per\s+(?:failed\s+)?attempt|says\s+it|with\s+(?:how|what|its))\b"
)


def _logger_method(func: ast.expr) -> str | None:
    """`log.warning`, `self.log.error`, `get_logger(...).info` (and `(a if c else b)`
    of them): the level method called, or None for a call that is not a log call."""
    if isinstance(func, ast.IfExp):
        return _logger_method(func.body) or _logger_method(func.orelse)
    if not isinstance(func, ast.Attribute) or func.attr not in LEVELS | {"log"}:
        return None
    owner = func.value
    if isinstance(owner, ast.Call):
        owner = owner.func
    name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
    return func.attr if name in {"log", "logger", "get_logger"} else None


def _strings_assigned(scope: ast.AST, variable: str) -> set[str]:
    """The string constants a module assigns to `variable`, tuple targets included
    (`level, event = logging.WARNING, "kafka.unreachable"` for `log.log(level, event)`)."""
    found = set()
    for node in ast.walk(scope):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = (
                zip(target.elts, node.value.elts, strict=False)
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                else [(target, node.value)]
            )
            for name, value in pairs:
                named = isinstance(name, ast.Name) and name.id == variable
                if named and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.add(value.value)
    return found


PERCENT_FORMAT = re.compile(r":? %[sr]")
"""Where a stdlib-style event's arguments begin (`"worker stops: %s"`)."""

ANY = "**"
"""A field name standing for a call's `**fields`: any name may be among them."""


@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


@functools.cache
def logged_events() -> dict[str, set[str]]:
    """Every event name the code (`CODE`) logs with structlog, with the names of the
    fields its calls give (`ANY` for a call's `**fields`)."""
    events: dict[str, set[str]] = {}
    for top in CODE:
        for path in (ROOT / top).rglob("*.py"):
            module = _parsed(path)
            for node in ast.walk(module):
                if not isinstance(node, ast.Call):
                    continue
                method = _logger_method(node.func)
                args = node.args[1:] if method == "log" else node.args
                if method is None or not args:
                    continue
                event = args[0]
                if isinstance(event, ast.Constant) and isinstance(event.value, str):
                    names = {event.value}
                elif isinstance(event, ast.Name):
                    names = _strings_assigned(module, event.id)
                else:
                    continue
                given = {keyword.arg or ANY for keyword in node.keywords}
                for name in names:
                    events.setdefault(name, set()).update(given)
                    # a %-format of the stdlib's (`"producer spent: %s"`): its line begins
                    # with the words before it, what the pages name
                    if (words := PERCENT_FORMAT.split(name)[0]) != name:
                        events.setdefault(words, set()).update(given)
    return events


def _without_code_blocks(text: str) -> str:
    """Fenced blocks blanked (shell sessions, config), the line numbers kept."""
    return re.sub(r"^```.*?^```", lambda b: "\n" * b[0].count("\n"), text, flags=re.S | re.M)


def named_as_logged(text: str) -> list[tuple[int, str, list[str]]]:
    """The backticked names `text` presents as log events, with their lines and the
    fields a log line written out gives (`process_stopped outcome=ok` : `outcome`)."""
    prose = _without_code_blocks(text)
    named = []
    matches = sorted([*SPAN.finditer(prose), *WORDS.finditer(prose)], key=lambda m: m.start())
    for match in matches:
        if (
            FIELDS.match(match["fields"])
            or SAID_BEFORE.search(prose, max(0, match.start() - 40), match.start())
            or SAID_AFTER.match(prose, match.end())
        ):
            line = prose.count("\n", 0, match.start()) + 1
            name = " ".join(match["name"].split())  # (a span may break across lines)
            named.append((line, name, re.findall(r"\s([a-z_]+)=", match["fields"])))
    return named


def test_the_rule_finds_log_events_and_leaves_other_names_alone() -> None:
    text = (
        "The sink logs `sink_paused` once, then `insert_failed`; the last line is\n"
        '`process_stopped outcome="exit 1"`, and `kafka.unreachable` per attempt.\n'
        "Rows go to `dead_letters` with `event_id`; see `timeout_s`.\n"
        "```\nlog `not_prose`\n```\n"
        "The gateway logs `kafka unavailable` once, then `kafka\navailable again`; run\n"
        "`chainwatch kafka start`, then `readiness changed ready=false`; see `make test`.\n"
    )
    assert named_as_logged(text) == [
        (1, "sink_paused", []),
        (1, "insert_failed", []),
        (2, "process_stopped", ["outcome"]),
        (2, "kafka.unreachable", []),
        (7, "kafka unavailable", []),
        (7, "kafka available again", []),
        (9, "readiness changed", ["ready"]),
    ]


def test_the_code_s_events_are_read_from_every_kind_of_log_call() -> None:
    events = logged_events()
    assert {
        "sink_paused",  # log.warning("...")
        "invalid_alert_skipped",  # (log.error if bug else log.warning)("...")
        "kafka.unreachable",  # level, event = ..., "..."; log.log(level, event)
        "process_stopped",
        "kafka unavailable",  # the gateway's, in words
        "producer spent",  # the stdlib's "producer spent: %s": the words its line begins with
    } <= events.keys()
    assert {"outcome", "process", "waited_for"} <= events["process_stopped"]


def test_every_log_event_the_operator_pages_name_is_logged_by_the_code() -> None:
    """And a line written out with its fields (`kafka_waiting kafka=<where> ...`) names
    fields the event's calls give."""
    events = logged_events()
    unknown = []
    checked = worded = 0
    for page in PAGES:
        for line, name, fields in named_as_logged((ROOT / page).read_text(encoding="utf-8")):
            checked += 1
            worded += " " in name
            if name not in events:
                unknown.append(f"{page}:{line} `{name}`: no log call logs it")
            elif ANY not in events[name] and set(fields) - events[name]:
                missing = sorted(set(fields) - events[name])
                unknown.append(f"{page}:{line} `{name}`: no call gives it {missing}")
    assert checked >= 90, "the rule no longer finds the pages' log events"
    assert worded >= 10, "the rule no longer finds the events named in words"
    assert not unknown, unknown


#: names in the pages the repository has in no file: library internals and settings the
#: reliability notes discuss (aiokafka's `fail_all` and `retry_backoff_ms`, faust's
#: `on_recovery_completed`), the pattern of the cluster's local tables (`t_local` for a
#: table `t`), the misspelt filter value sinks.md gives as one `notify` refuses, and
#: ingest.md's names of other programs (nginx's `client_body_timeout`, uvicorn's
#: `forwarded_allow_ips`) and the bare name it gives as one no CBV term has
NOT_OURS = {
    "fail_all",
    "retry_backoff_ms",
    "on_recovery_completed",
    "t_local",
    "stage_overdu",
    "client_body_timeout",
    "forwarded_allow_ips",
    "receiving_goods",
}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants of `tree` (prose, as the docs are)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def repository_names(data_dir: Path) -> set[str]:
    """Every name the repository's code and configuration have: Python identifiers and the
    words of its string constants (docstrings left out: they are prose like the docs; of
    the tests, their functions' names), the
    words of its SQL, YAML, JSON and TOML files, its file names, and the series the
    processes export (`_total` and the like are added by prometheus_client, and the default
    registry has `process_cpu_seconds_total`)."""
    from exported_metrics import exported_by_process

    names = set().union(*exported_by_process(data_dir).values())
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    for file in listed.stdout.split():
        path = ROOT / file
        names |= {path.name, path.stem}
        if path.suffix == ".py" and file.startswith("tests/"):
            # the pages name tests and fixtures by their function (parsing the suite
            # doubled the test's time)
            names |= set(re.findall(r"^\s*(?:async )?def (\w+)", path.read_text("utf-8"), re.M))
        elif path.suffix == ".py":
            tree = _parsed(path)
            prose = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Name):
                    names.add(node.id)
                elif isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(node.name)
                elif isinstance(node, ast.arg | ast.keyword) and node.arg:
                    names.add(node.arg)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names |= set() if id(node) in prose else set(re.findall(r"\w+", node.value))
        elif path.suffix in {".sql", ".yaml", ".yml", ".json", ".toml"}:
            names |= set(re.findall(r"\w+", path.read_text(encoding="utf-8")))
    return names


def test_every_other_event_shaped_name_of_the_pages_is_one_the_repository_has(
    tmp_path: Path,
) -> None:
    """The rule above leaves out a log event the text does not say is one (`(sink_paused`
    once, then ...`, `(`webhook_client_close_cut`)`): a misspelt one is still a name no
    file of the repository has, where a table, column, setting, label value or function
    the pages name is in some file."""
    names = repository_names(tmp_path) | NOT_OURS
    unknown = []
    for page in PAGES:
        prose = _without_code_blocks((ROOT / page).read_text(encoding="utf-8"))
        for match in SPAN.finditer(prose):
            name = match["name"]
            if name not in names and not set(name.split(".")) <= names:
                line = prose.count("\n", 0, match.start()) + 1
                unknown.append(f"{page}:{line} `{name}`")
    assert not unknown, f"in no file of the repository: {unknown}"


#: a message the pages quote: a `/readyz` reason, an error (`"rebalancing"`,
#: `"offset commit unanswered for N s"`); `...`, `<what>` and a lone `N` stand for text.
#: One with a backslash is a JSON string the page shows (ingest.md's `"unit\u005fid"`)
QUOTED = re.compile(r'`"([^"`\\]+)"`')
ELIDED = re.compile(r"\.\.\.|<[^>]+>|\bN\b")


@functools.cache
def _assignments(module: ast.Module) -> dict[str, list[ast.expr]]:
    """The strings a module assigns to each variable (both branches of `a if c else b`)."""
    values: dict[str, list[ast.expr]] = {}
    for node in ast.walk(module):
        if not isinstance(node, ast.Assign):
            continue
        value = node.value
        branches = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
        strings = [b for b in branches if isinstance(b, ast.Constant | ast.JoinedStr)]
        for target in node.targets:
            if isinstance(target, ast.Name) and strings:
                values.setdefault(target.id, []).extend(strings)
    return values


def _templates(node: ast.expr, module: ast.Module, depth: int = 0) -> list[list[str]]:
    """A string's literal text between its f-string fields, one list per way the string
    can read: a field naming a variable the module assigns strings to takes each of them
    (`what` in `f"Kafka at {bootstrap} {what} (since ...)"`), any other is a gap."""
    if isinstance(node, ast.Constant):
        return [[str(node.value)]]
    if not isinstance(node, ast.JoinedStr):
        return [["", ""]]
    ways: list[list[str]] = [[""]]
    for value in node.values:
        if isinstance(value, ast.Constant):
            options = [[str(value.value)]]
        else:
            field = value.value if isinstance(value, ast.FormattedValue) else None
            known = _assignments(module).get(field.id, []) if isinstance(field, ast.Name) else []
            options = (
                [o for k in known for o in _templates(k, module, depth + 1)]
                if known and depth < 2
                else [["", ""]]
            )
        ways = [[*way[:-1], way[-1] + option[0], *option[1:]] for way in ways for option in options]
    return ways


def _pattern(parts: list[str]) -> re.Pattern[str]:
    """Literal parts with anything between them, any whitespace as any whitespace."""
    return re.compile(".+".join(r"\s+".join(map(re.escape, p.split(" "))) for p in parts), re.S)


def code_messages() -> list[list[str]]:
    """The literal parts of every string and f-string of the code (`CODE`) with a
    field-free word in it (an f-string of fields alone would match any message)."""
    found = []
    for top in CODE:
        for path in (ROOT / top).rglob("*.py"):
            module = _parsed(path)
            for node in ast.walk(module):
                if isinstance(node, ast.JoinedStr) or (
                    isinstance(node, ast.Constant) and isinstance(node.value, str)
                ):
                    for parts in _templates(node, module):
                        if re.search(r"[a-z]{3}", "".join(parts), re.I):
                            found.append(parts)
    return found


def _said_by_the_code(message: str, templates: list[list[str]]) -> bool:
    """The quoted message, its elisions as any text, is one a string of the code makes:
    the doc's pattern matches the string with its fields filled in, or the string's
    pattern (fields as any text) matches the doc's text where the string's own text is
    around it (a field the doc writes out, one `_templates` could not resolve)."""
    chunks = ELIDED.split(message)
    said, written = _pattern(chunks), ELIDED.sub("x", message)
    longest = max(chunks, key=len).strip()
    for parts in templates:
        text = "x".join(parts)
        if longest not in text and not any(len(p) > 3 and p in message for p in parts):
            continue  # shares no text with the message: neither pattern can match
        if said.fullmatch(text):
            return True
        # a field inside the string may stand for the doc's words, not one at its start
        # or end: `f"Kafka at {x}"` would make every message beginning "Kafka at"
        if parts[0] and parts[-1] and _pattern(parts).fullmatch(written):
            return True
    return False


def test_every_message_the_operator_pages_quote_is_one_the_code_makes() -> None:
    templates = code_messages()
    assert _said_by_the_code("offset commit unanswered for N s", templates)
    assert not _said_by_the_code("offset commit unansw for N s", templates)
    unknown = []
    quoted = 0
    for page in PAGES:
        prose = _without_code_blocks((ROOT / page).read_text(encoding="utf-8"))
        for match in QUOTED.finditer(prose):
            quoted += 1
            if not _said_by_the_code(" ".join(match[1].split()), templates):
                line = prose.count("\n", 0, match.start()) + 1
                unknown.append(f'{page}:{line} "{match[1]}"')
    assert quoted >= 8, "the pattern no longer finds the quoted messages"
    assert not unknown, f"no string of the code makes these: {unknown}"
