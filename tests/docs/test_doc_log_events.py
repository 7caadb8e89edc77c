"""The log events the operator pages tell an operator to look for are events the code logs.

A runbook says what to grep for: `sink_paused`, `process_stopped outcome=error`. A name
the code never logs (renamed, misspelt, another process's) sends the reader hunting for a
line that never comes. The code's events are read from its source: the first argument of
every structlog call (`log.warning("sink_paused", ...)`). The pages' are the backticked
names the text presents as log lines (`LOGGED`): a name is not checked for being
snake_case alone, since table, column, setting and label names are snake_case too. A
line written out with its fields names fields the event's calls give. The
metric names in the docs are checked in test_doc_facts.py
(`test_every_metric_the_docs_name_is_exported_by_its_process`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from docs_helpers import ROOT

#: the operator pages: where runbooks, probes and reliability notes name log lines
PAGES = [
    "README.md",
    "docs/observability.md",
    "docs/reliability.md",
    "docs/sinks.md",
    "docs/alert-channels.md",
]
CODE = ["chainwatch", "streams", "sinks", "schemas", "simulator"]
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}

#: a backticked event-shaped name: snake_case (`sink_paused`) or dotted (`kafka.unreachable`),
#: alone or as a log line with its fields (`process_stopped outcome="exit 1"`)
SPAN = re.compile(r"`(?P<name>[a-z][a-z0-9]*(?:[._][a-z0-9]+)+)(?P<fields>(?: [^`]*)?)`")
#: what makes it a log event: a line's fields after it, or the words around it saying so
#: (`logs`/`logged as`/`the log says`/`warning`/`error line`/`its last line is`, `..., then`
#: after another event, or `in its log`/`line`/`once`/`per attempt`/`with how long` after)
FIELDS = re.compile(r" [a-z_]+=")
SAID_BEFORE = re.compile(
    r"(?:\blog(?:s|ged|ging)?(?:\s+first)?(?:\s+as)?(?:\s+an?\s+(?:error|warning))?"
    r"|\blog\s+says|\bwarning|\berror(?:\s+line)?|\blines?\s+(?:then\s+)?(?:is|say\s+why:)"
    r"|says\s+so:|,?\s+then|always\s+before)\s+\(?$",
    re.I,
)
SAID_AFTER = re.compile(
    r"\s+(?:warning|lines?|in\s+(?:its|the)\s+log|log\s+line|is\s+logged|once"
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
    """The string constants a function assigns to `variable`, tuple targets included
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


ANY = "**"
"""A field name standing for a call's `**fields`: any name may be among them."""


def logged_events(roots: list[Path]) -> dict[str, set[str]]:
    """Every event name the code under `roots` logs with structlog, with the names of
    the fields its calls give (`ANY` for a call's `**fields`)."""
    events: dict[str, set[str]] = {}
    for root in roots:
        for path in root.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for scope in ast.walk(tree):
                if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
                    continue
                for node in ast.walk(scope):
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
                        names = _strings_assigned(scope, event.id)
                    else:
                        continue
                    given = {keyword.arg or ANY for keyword in node.keywords}
                    for name in names:
                        events.setdefault(name, set()).update(given)
    return events


def _without_code_blocks(text: str) -> str:
    """Fenced blocks blanked (shell sessions, config), the line numbers kept."""
    return re.sub(r"^```.*?^```", lambda b: "\n" * b[0].count("\n"), text, flags=re.S | re.M)


def named_as_logged(text: str) -> list[tuple[int, str, list[str]]]:
    """The backticked names `text` presents as log events, with their lines and the
    fields a log line written out gives (`process_stopped outcome=ok` : `outcome`)."""
    prose = _without_code_blocks(text)
    named = []
    for match in SPAN.finditer(prose):
        if (
            FIELDS.match(match["fields"])
            or SAID_BEFORE.search(prose, max(0, match.start() - 40), match.start())
            or SAID_AFTER.match(prose, match.end())
        ):
            line = prose.count("\n", 0, match.start()) + 1
            named.append((line, match["name"], re.findall(r" ([a-z_]+)=", match["fields"])))
    return named


def test_the_rule_finds_log_events_and_leaves_other_names_alone() -> None:
    text = (
        "The sink logs `sink_paused` once, then `insert_failed`; the last line is\n"
        '`process_stopped outcome="exit 1"`, and `kafka.unreachable` per attempt.\n'
        "Rows go to `dead_letters` with `event_id`; see `timeout_s`.\n"
        "```\nlog `not_prose`\n```\n"
    )
    assert named_as_logged(text) == [
        (1, "sink_paused", []),
        (1, "insert_failed", []),
        (2, "process_stopped", ["outcome"]),
        (2, "kafka.unreachable", []),
    ]


def test_the_code_s_events_are_read_from_every_kind_of_log_call() -> None:
    events = logged_events([ROOT / top for top in CODE])
    assert {
        "sink_paused",  # log.warning("...")
        "invalid_alert_skipped",  # (log.error if bug else log.warning)("...")
        "kafka.unreachable",  # level, event = ..., "..."; log.log(level, event)
        "process_stopped",
    } <= events.keys()
    assert {"outcome", "process", "waited_for"} <= events["process_stopped"]


def test_every_log_event_the_operator_pages_name_is_logged_by_the_code() -> None:
    """And a line written out with its fields (`kafka_waiting kafka=<where> ...`) names
    fields the event's calls give."""
    events = logged_events([ROOT / top for top in CODE])
    unknown = []
    checked = 0
    for page in PAGES:
        for line, name, fields in named_as_logged((ROOT / page).read_text(encoding="utf-8")):
            checked += 1
            if name not in events:
                unknown.append(f"{page}:{line} `{name}`: no log call logs it")
            elif ANY not in events[name] and set(fields) - events[name]:
                missing = sorted(set(fields) - events[name])
                unknown.append(f"{page}:{line} `{name}`: no call gives it {missing}")
    assert checked >= 90, "the rule no longer finds the pages' log events"
    assert not unknown, unknown
