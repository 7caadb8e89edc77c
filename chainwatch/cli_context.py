"""What every CLI command shares: the consoles and the settings built once per process."""

from __future__ import annotations

import math
import os
import re
import unicodedata
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console

from chainwatch.errors import UserError
from chainwatch.logs import configure_logging, get_logger
from chainwatch.settings import (
    Settings,
    conflicting_variables,
    unknown_variables,
    unreadable_json,
)

out = Console()
err = Console(stderr=True, soft_wrap=True)
state: dict[str, Any] = {"debug": False}


def cell_text(value: Any) -> str:
    """A stored value as a table cell: control and format characters (an escape
    sequence, a right-to-left override in a CRM name) shown escaped, never sent to
    the terminal, a pager or a log viewer as they are."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(
        c.encode("unicode_escape").decode() if unicodedata.category(c) in ("Cc", "Cf") else c
        for c in text
    )


def settings() -> Settings:
    """The settings, built once per process; a malformed env value is a one-line error."""
    cached = state.get("settings")
    if isinstance(cached, Settings):
        return cached
    if conflicts := conflicting_variables(os.environ):
        raise UserError("; ".join(conflicts))
    try:
        built = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "CHAINWATCH_" + "__".join(str(p).upper() for p in first["loc"])
        # a model's own check (Kafka security, a pair of settings) is pydantic's "Value error"
        raise UserError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    except (SettingsError, RecursionError) as exc:  # a value's JSON (the sections')
        lines = unreadable_json(os.environ)
        raise UserError("; ".join(lines) if lines else str(exc)) from None
    state["settings"] = built
    configure_logging(built.log_level, built.log_format)
    for warning in unknown_variables(os.environ):  # names only: a value may be a secret
        if built.log_format == "json":  # a JSON event, as every stderr line then is
            get_logger("chainwatch.settings").warning(f"warning: {warning}")
        else:
            err.print(f"warning: {warning}", markup=False, highlight=False)
    return built


def check_plan(cfg: Settings) -> None:
    """Load the SLA plan before anything touches Kafka: a bad file is a one-line error.

    Raises `schemas.plan.PlanError`, which `chainwatch.cli.main` reports like a `UserError`.
    """
    from schemas.plan import load_plan

    load_plan(cfg.engine.plan)


def require_kafka(cfg: Settings, timeout_s: float | None = None) -> None:
    """Fail in one line within seconds when the broker does not answer (no library noise)."""
    from chainwatch.kafka_admin import AUTHENTICATION_FAILED, AUTHENTICATION_HINT, TLS_HINT
    from chainwatch.kafka_watch import TLS_HANDSHAKE_FAILED
    from chainwatch.local_kafka import kafka_problem
    from chainwatch.logs import silenced

    with silenced("kafka", "aiokafka"):
        limit = cfg.kafka.probe_timeout_s if timeout_s is None else timeout_s
        problem = kafka_problem(cfg.kafka.endpoint, timeout_s=limit)
    if problem is None:
        return
    if problem.startswith(AUTHENTICATION_FAILED):
        raise UserError(f"Kafka at {cfg.kafka.bootstrap}: {problem}; {AUTHENTICATION_HINT}")
    if problem.startswith(TLS_HANDSHAKE_FAILED):
        raise UserError(f"Kafka at {cfg.kafka.bootstrap}: {problem}; {TLS_HINT}")
    fix = (
        "start it with `chainwatch kafka start`"
        if cfg.kafka.is_local
        else "check CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS, CHAINWATCH_KAFKA__SECURITY_PROTOCOL "
        "and that the brokers are up"
    )
    raise UserError(f"Kafka at {cfg.kafka.bootstrap} {problem}; {fix}")


_UNKNOWN_TABLE = re.compile(
    r"UNKNOWN_TABLE|Unknown table expression identifier|Table \S+ does not exist"
    r"|UNKNOWN_DATABASE|Database \S+ does not exist"
)
_TABLE_NAME = re.compile(r"(?:identifier|Table) '?`?([\w.]+)")
_UNREACHABLE = re.compile(r"^(cannot reach ClickHouse at \S+?):? .*?(; check \S+)$", re.S)
_REASON = re.compile(
    r"(TLS handshake failed \([^)]*\))"
    r"|\[Errno -?\d+\] ([^'\")(;]+)|(timed out)|(Name or service not known)"
    r"|(certificate verify failed)|(no answer within [\d.]+ s)|(no valid HTTP answer)"
    r"|(\S+ did not resolve within [\d.]+ s)"
)


def plain_store_error(message: str) -> str:
    """One line a newcomer can act on, instead of ClickHouse's or urllib3's full text."""
    if _UNKNOWN_TABLE.search(message):
        table = _TABLE_NAME.search(message)
        what = f"table {table.group(1)!r}" if table else "such table"
        return (
            f"ClickHouse has no {what}; on a fresh store run `chainwatch db migrate` "
            "(or start `chainwatch sink`, which migrates first)"
        )
    unreachable = _UNREACHABLE.match(message)
    if unreachable:
        found = _REASON.search(message)
        reason = next((g for g in found.groups() if g), "") if found else ""
        reason = reason.strip().rstrip(".")
        why = f" ({reason[:1].lower()}{reason[1:]})" if reason else ""
        if reason.startswith("TLS "):  # as Kafka's: `Kafka at ...: TLS handshake failed (...)`
            why = f": {reason}"
        return f"{unreachable.group(1)}{why}{unreachable.group(2)}"
    return message


def finite_number(text: str) -> float:
    """A number given on the command line, refused unless finite (`ValueError`, its message
    the one to show): `nan`, `inf` and `1e400` parse as floats, and a NaN then passed
    every range check (it compares false) or failed one with a message that made no sense
    (`--rate nan`: "should be less than or equal to 10000000")."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _bound(number: float) -> str:
    return f"{number:.15g}" if number != int(number) else str(int(number))


def float_option(*flags: str, min: float | None = None, max: float | None = None, help: str) -> Any:
    """Every float option of the CLI: a value that is not a finite number is a usage error
    that says so, one outside `min`..`max` is said as typer says it of an int option (the
    help shows the range). A parser of our own: typer's range check ran first, on `nan`
    too ("should be less than or equal to ..."), and a `callback` only after it."""
    import typer

    def parse(text: Any) -> float:
        if isinstance(text, float):  # the default
            return text
        try:
            value = finite_number(str(text))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if min is not None and value < min:
            raise typer.BadParameter(f"Input should be greater than or equal to {_bound(min)}")
        if max is not None and value > max:
            raise typer.BadParameter(f"Input should be less than or equal to {_bound(max)}")
        return value

    return typer.Option(*flags, min=min, max=max, parser=parse, help=help)
