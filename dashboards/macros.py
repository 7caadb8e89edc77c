"""Expand a panel's SQL the way Grafana and the ClickHouse plugin do, to run it elsewhere.

Order as in `grafana-clickhouse-datasource` 4.x: the frontend applies
`$__conditionalAll(condition, $var)` (to `1=1` when the variable is "All"),
then substitutes template variables; the backend expands the time macros
(`$__timeFilter(col)`, `$__timeFilter_ms(col)`, `$__timeInterval(col)`,
`$__timeInterval_ms(col)`, `$__interval_s`, `$__fromTime`, `$__toTime`,
`$__fromTime_ms`, `$__toTime_ms`, `$__dateFilter(col)`) with the plugin's exact
output. Used by the tests to run every panel query on chDB, and by anyone who
wants to paste a panel's query into `chainwatch sql`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

ALL: None = None
"""A variable's value when "All" is selected."""


class MacroError(ValueError):
    """The SQL uses a macro or variable that cannot be expanded."""


@dataclass(frozen=True)
class QueryContext:
    """The dashboard state a query runs in: time range, interval, variable values."""

    time_from: datetime
    time_to: datetime
    interval_s: float = 3600
    variables: Mapping[str, Sequence[str] | None] = field(default_factory=dict)


def _args(text: str, open_at: int) -> tuple[list[str], int]:
    """Top-level comma-separated arguments of the call whose `(` is at `open_at`."""
    depth, start, args = 0, open_at + 1, []
    quote: str | None = None
    for i in range(open_at, len(text)):
        ch = text[i]
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:i].strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(text[start:i].strip())
            start = i + 1
    raise MacroError(f"unbalanced parentheses after {text[max(0, open_at - 20) : open_at]!r}")


def _replace_calls(sql: str, name: str, expand: Callable[[list[str]], str]) -> str:
    token = f"$__{name}("
    while (at := sql.find(token)) != -1:
        args, end = _args(sql, at + len(token) - 1)
        sql = sql[:at] + expand(args) + sql[end:]
    return sql


_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")


def _format(name: str, values: Sequence[str], fmt: str | None) -> str:
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt in (None, "raw", "csv"):
        return ",".join(values)
    raise MacroError(f"variable format {fmt!r} of ${name} is not supported")


def conditional_all(sql: str, ctx: QueryContext) -> str:
    def expand(args: list[str]) -> str:
        if len(args) != 2:
            raise MacroError("$__conditionalAll takes (condition, $variable)")
        match = _VAR.fullmatch(args[1])
        if not match:
            raise MacroError(f"$__conditionalAll: {args[1]!r} is not a variable")
        name = match.group(1) or match.group(3)
        if name not in ctx.variables:
            raise MacroError(f"$__conditionalAll: no value for ${name}")
        return "1=1" if ctx.variables[name] is ALL else args[0]

    return _replace_calls(sql, "conditionalAll", expand)


def substitute_variables(sql: str, ctx: QueryContext) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name not in ctx.variables:
            raise MacroError(f"no value for ${name}")
        values = ctx.variables[name]
        if values is ALL:
            raise MacroError(f"${name} is All outside $__conditionalAll")
        return _format(name, values, match.group(2))

    return _VAR.sub(repl, sql)


def _one(name: str, args: list[str]) -> str:
    if len(args) != 1 or not args[0]:
        raise MacroError(f"$__{name} takes one column")
    return args[0]


def time_macros(sql: str, ctx: QueryContext) -> str:
    start, end = int(ctx.time_from.timestamp()), int(ctx.time_to.timestamp())
    start_ms = int(ctx.time_from.timestamp() * 1000)
    end_ms = int(ctx.time_to.timestamp() * 1000)
    seconds = max(int(ctx.interval_s), 1)
    millis = max(int(ctx.interval_s * 1000), 1)
    calls: dict[str, Callable[[list[str]], str]] = {
        "timeFilter_ms": lambda a: (
            f"{_one('timeFilter_ms', a)} >= fromUnixTimestamp64Milli({start_ms}) AND "
            f"{a[0]} <= fromUnixTimestamp64Milli({end_ms})"
        ),
        "timeFilter": lambda a: (
            f"{_one('timeFilter', a)} >= toDateTime({start}) AND {a[0]} <= toDateTime({end})"
        ),
        "dateFilter": lambda a: (
            f"{_one('dateFilter', a)} >= toDate('{ctx.time_from:%Y-%m-%d}') AND "
            f"{a[0]} <= toDate('{ctx.time_to:%Y-%m-%d}')"
        ),
        "timeInterval_ms": lambda a: (
            f"toStartOfInterval(toDateTime64({_one('timeInterval_ms', a)}, 3), "
            f"INTERVAL {millis} millisecond)"
        ),
        "timeInterval": lambda a: (
            f"toStartOfInterval(toDateTime({_one('timeInterval', a)}), INTERVAL {seconds} second)"
        ),
    }
    for name, expand in calls.items():
        sql = _replace_calls(sql, name, expand)
    plain = {
        "fromTime_ms": f"fromUnixTimestamp64Milli({start_ms})",
        "toTime_ms": f"fromUnixTimestamp64Milli({end_ms})",
        "fromTime": f"toDateTime({start})",
        "toTime": f"toDateTime({end})",
        "interval_s": str(seconds),
    }
    for name, text in plain.items():
        sql = re.sub(rf"\$__{name}\b(\(\))?", text, sql)
    if (left := re.search(r"\$__\w+", sql)) is not None:
        raise MacroError(f"unknown macro {left.group(0)}")
    return sql


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL ClickHouse receives for this dashboard state."""
    return time_macros(substitute_variables(conditional_all(sql, ctx), ctx), ctx)
