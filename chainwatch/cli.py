"""`chainwatch`: the one console script; each subcommand composes the packages.

Errors the user can fix (`UserError`, bad settings, a bad SLA plan) print one
line and exit non-zero; `--debug` adds the traceback. A bad option or argument,
click's or a command's own (`UsageError`), is one line ending with the command
whose `--help` to read, exit 2. Anything else is an internal error: one line
naming it, exit 1.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import sys
import traceback
from typing import Annotated, Any

import click
import typer
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text
from typer.core import TyperGroup

from chainwatch import lifeline
from chainwatch.cli_context import cell_text, err, out, plain_store_error, settings, state
from chainwatch.commands import (
    backtest,
    capacity,
    dashboards,
    deliveries,
    gateway,
    importer,
    notify,
    replay,
    runs,
    silences,
    simulate,
    status,
    tokens,
)
from chainwatch.errors import USER_ERRORS, UsageError, UserError, exit_code


class _CtrlC(Exception):
    """Ctrl-C (`KeyboardInterrupt`) inside a command, carried out of typer: typer turns a
    `KeyboardInterrupt` into exit status 130 and returns it, where `main` could not tell it
    from a command's own `typer.Exit(130)` and said nothing (`doctor`, `runs list`)."""


class _Commands(TyperGroup):
    """The root group: every command runs inside its `invoke`."""

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _CtrlC from None


app = typer.Typer(
    cls=_Commands,
    name="chainwatch",
    help="Real-time supply-chain monitoring for knitwear production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
kafka_app = typer.Typer(help="Run the project's local Apache Kafka broker.", no_args_is_help=True)
db_app = typer.Typer(help="ClickHouse schema.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(db_app, name="db")


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    lifeline_fd: Annotated[int | None, typer.Option(lifeline.OPTION, hidden=True)] = None,
) -> None:
    state["debug"] = debug
    if lifeline_fd is not None:  # a child chainwatch started: it stops when its parent dies
        settings()  # logging configured first: the line saying so is in the process's format
        command = ctx.invoked_subcommand or "chainwatch"
        lifeline.watch_parent(lifeline_fd, _PROCESS_NAMES.get(command, command))


_PROCESS_NAMES = {"notify": "notifier"}
"""A command's process as its own log lines name it (`process_starting process=...`)."""


# --- kafka ------------------------------------------------------------------


def _broker() -> Any:
    from chainwatch.local_kafka import LocalBroker

    cfg = settings()
    if not cfg.kafka.is_local:
        raise UserError(
            f"CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS is set ({cfg.kafka.bootstrap}): "
            "that broker is not managed here"
        )
    return LocalBroker(cfg)


def _warn_open_files(broker: Any) -> None:
    if warning := broker.open_files_warning():
        err.print(f"[yellow]warning:[/] {escape(warning)}")


@kafka_app.command("start")
def kafka_start() -> None:
    """Fetch the jars (once), format storage and start the broker; no-op when it runs."""
    broker = _broker()
    status = broker.start(progress=lambda msg: err.print(f"[dim]{msg}[/]"))
    out.print(f"kafka ready on {status.bootstrap} (pid {status.pid})")
    _warn_open_files(broker)


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    out.print("kafka stopped" if _broker().stop() else "kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Is the local broker running and answering? Exit 1 if not."""
    broker = _broker()
    status = broker.status()
    out.print(
        f"kafka {status.detail} on {status.bootstrap}"
        + (f" (pid {status.pid})" if status.pid else "")
    )
    _warn_open_files(broker)
    if not status.running:
        raise typer.Exit(1)


# --- ClickHouse -----------------------------------------------------------


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations to the configured ClickHouse."""
    from sinks.clickhouse.connection import SerializedClient, open_client
    from sinks.clickhouse.migrate import migrate

    cfg = settings()
    client = SerializedClient(open_client(cfg))
    try:
        applied = migrate(client, cfg)
    finally:
        client.close()
    if applied:
        for m in applied:
            out.print(f"applied {m.version:04d}_{m.name}")
    else:
        out.print("schema is up to date")


@app.command("sql")
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL statement.")],
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Run a query against the configured store (works while a sink owns the embedded one)."""
    from sinks.clickhouse.readers import open_reader

    if fmt not in ("table", "csv", "json"):
        raise UsageError(f"--format {fmt!r}: expected table, csv or json")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes the shell passed that are not UTF-8
        raise UsageError(f"QUERY is not UTF-8 text (character {exc.start})") from None
    reader = open_reader(settings())
    try:
        result = reader.query(query)
    finally:
        reader.close()
    if fmt == "json":
        for row in result.rows:
            sys.stdout.write(
                json.dumps(dict(zip(result.columns, row, strict=True)), default=str) + "\n"
            )
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")  # as ClickHouse and the shell
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    else:
        # Text, not str: a cell or name like `[/]` or `[link=...]` is data, never markup
        table = RichTable()
        for name in result.columns:
            table.add_column(Text(name))
        for row in result.rows:
            table.add_row(*(Text(cell_text(v)) for v in row))
        out.print(table)


# --- settings and health ----------------------------------------------------


@app.command("config")
def config() -> None:
    """Print the effective settings (secrets masked)."""
    sys.stdout.write(json.dumps(settings().redacted(), indent=2, sort_keys=True) + "\n")


@app.command("doctor")
def doctor() -> None:
    """Check Java, Maven, Kafka (and its topics' replication) and ClickHouse; say how to fix."""
    from chainwatch.doctor import run_checks

    checks = run_checks(settings())
    for check in checks:
        mark = (
            "[red]FAIL[/]"
            if not check.ok
            else "[yellow]WARN[/]"
            if check.warning
            else "[green]ok[/]"
        )
        # a detail may name a path (a tool found on PATH, the data dir): escaped
        detail = escape(cell_text(check.detail))
        out.print(f"{mark:>14}  {check.name:<12} {detail}", soft_wrap=True)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


# --- long-running processes -------------------------------------------------


@app.command("worker")
def worker() -> None:
    """Run a stream worker (live clock)."""
    from chainwatch.runners import run_worker

    run_worker(settings())


@app.command("sink")
def sink(
    drain: Annotated[bool, typer.Option(help="Exit once caught up with every topic.")] = False,
    new_kafka_epoch: Annotated[
        bool,
        typer.Option(
            help="The Kafka was rebuilt (new cluster or re-created topics) but the store is "
            "kept: store its records after the old ones (docs/sinks.md)."
        ),
    ] = False,
) -> None:
    """Sink topics into ClickHouse (owns the embedded store while it runs)."""
    from chainwatch.sink_runner import run_sink

    stats = run_sink(settings(), drain=drain, new_kafka_epoch=new_kafka_epoch)
    err.print(f"sink: {stats.rows_written} rows in {stats.batches} batches")


@app.command("demo")
def demo() -> None:
    """Broker, worker, sink and generated traffic on the embedded defaults; Ctrl-C stops all."""
    from chainwatch.demo import run_demo

    run_demo(settings(), console=out)


for _command_module in (
    replay,
    runs,
    backtest,
    simulate,
    gateway,
    tokens,
    status,
    dashboards,
    notify,
    deliveries,
    silences,
    importer,
    capacity,
):
    _command_module.register(app)


def _classes(*candidates: type[BaseException]) -> tuple[type[BaseException], ...]:
    return tuple(dict.fromkeys(candidates))


# typer up to 0.2x raises click's own exceptions; later ones a vendored click's
# (`typer._click`): both are caught, the latter found through typer's public classes.
_USAGE_ERRORS = _classes(
    click.ClickException,
    *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
)
_USAGE_ONLY = _classes(
    click.UsageError, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
)
_EXITS = _classes(click.exceptions.Exit, typer.Exit)
_ABORTS = _classes(click.exceptions.Abort, typer.Abort)


def _usage_error(exc: Any, argv: list[str]) -> int:
    """click shows a bad option or argument as three lines (the usage, a hint, then
    `Error: ...`); the README promises one `error:` line for what the user can fix. The
    message already says which option and what it takes; where help is ends the line.
    The exit status stays click's (2 for a usage error), and a command's own
    `UsageError` is said the same way."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `chainwatch kafka`: the help is the answer
        exc.show()
        return int(exc.exit_code)
    said = str(exc) if isinstance(exc, UsageError) else exc.format_message()
    # one line even when a message spans several; an option or value echoed from argv
    # is shown escaped, never as terminal control characters
    message = cell_text(" ".join(said.split())).rstrip(".")
    if isinstance(exc, (UsageError, *_USAGE_ONLY)):
        message += f" (see `{_command_path(exc, argv)} --help`)"
    err.print(f"[red]error:[/] {escape(message)}", highlight=False)
    return int(exc.exit_code)


_CHANGES_NOTHING = "it changes nothing"
_BROKER_MAY_BE_STARTING = (
    "a broker it launched may still be starting: `chainwatch kafka status` says, "
    "`chainwatch kafka stop` stops it"
)
_LEFT_WHEN_INTERRUPTED = {
    "kafka start": _BROKER_MAY_BE_STARTING,
    # once its services run, Ctrl-C is the demo's ordinary stop; one reaches here while
    # it launches its broker
    "demo": _BROKER_MAY_BE_STARTING,
    "kafka stop": "the broker may still be stopping: `chainwatch kafka status` says",
    "db migrate": "the migrations applied before it stay applied; `chainwatch db migrate` "
    "applies the rest",
    # a service takes Ctrl-C as its stop once running; one reaches here while it starts
    **dict.fromkeys(
        ("worker", "sink", "notify", "gateway"),
        "it was still starting (once running, Ctrl-C is its ordinary stop)",
    ),
    "simulate": "the records written or sent before it stay (a --out file is cut short)",
    "import": "the records written or sent before it stay",
    "replay": "`chainwatch runs list` shows a run it may have left",
    "backtest": "the plans stored before it stay stored; `chainwatch runs list` shows a run "
    "it may have left",
    "runs delete": "the runs deleted before it stay deleted; `chainwatch runs list` "
    "shows what is left",
    "tokens create": "the tokens file is as it was, or holds the new token's hash whole",
    "dashboards export": "the files written before it stay",
    "dashboards publish": "the dashboards published before it stay published "
    "(publishing again is idempotent)",
    "deliveries resend": "the deliveries re-sent before it are logged; "
    "`chainwatch deliveries given-up` lists the rest",
    "silences add": "the silence may have been written: `chainwatch silences list` says",
    "silences expire": "the silence may have been ended: `chainwatch silences list` says",
    "silences drop-held": "the held messages dropped before it stay dropped; run it again "
    "to drop the rest",
}
"""What a command stopped by Ctrl-C leaves, said in its one `interrupted` line; a command
not named here is one of `_READS_ONLY`: it changes nothing. A test holds every command to
one of the two, so a new command cannot get the wrong line by being forgotten. `replay`,
`backtest` and `import` say their own (`chainwatch.errors.Interrupted`) where they clean
up; this is for a Ctrl-C before or after that."""

_READS_ONLY = frozenset(
    {
        "config",
        "deliveries given-up",
        "doctor",
        "gateway hash-token",
        "kafka status",
        "plan-capacity",
        "runs list",
        "silences list",
        "sql",
        "status",
    }
)
"""The commands that only read (or print): a Ctrl-C leaves nothing behind them."""


def _interrupted(argv: list[str]) -> str:
    """The line for a Ctrl-C (SIGINT) that reached the entry point: `doctor` or `runs
    list` ended with exit status 130 and no word, where a replay said what it left."""
    path = _command_path(None, argv)
    left = _LEFT_WHEN_INTERRUPTED.get(path.removeprefix("chainwatch "), _CHANGES_NOTHING)
    return f"interrupted; {path} stopped, {left}"


def _command_path(exc: Any, argv: list[str]) -> str:
    """The command whose `--help` helps: the error's own, else (click's parser leaves an
    option without its value without one; a command's `UsageError` has none) the deepest
    command that `argv` names. Named `chainwatch` also when run as `python -m chainwatch`
    or from a test."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        names = []
        while ctx.parent is not None:
            names.append(ctx.info_name)
            ctx = ctx.parent
        return " ".join(["chainwatch", *reversed(names)])
    command, names = typer.main.get_command(app), ["chainwatch"]
    for word in (w for w in argv if not w.startswith("-")):
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command = sub
        names.append(word)
    return " ".join(names)


def _say_error(message: str, code: int) -> None:
    """The one `error:` line; with `CHAINWATCH_LOG_FORMAT=json` (once the settings were
    read) a JSON log event like every other stderr line: a replay's progress and result
    lines were JSON and its error plain text, which a log collector could not parse."""
    cached = state.get("settings")
    if getattr(cached, "log_format", None) == "json":
        from chainwatch.logs import get_logger

        get_logger("chainwatch.cli").error(f"error: {message}", exit_code=code)
        return
    # a path or value of the user's in it (`cannot write DIR`) shown escaped, never as
    # the terminal control characters it may hold
    err.print(f"[red]error:[/] {escape(cell_text(message))}", highlight=False)


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
"""A write's errors that say where it went is full, whatever the command wrote: said in one
line (they ended in `internal error: OSError: [Errno 28] ...`)."""


HELP_CUT_EXIT = 128 + signal.SIGPIPE
"""The status of a help page whose reader closed the pipe before its end (`chainwatch
--help | head -1`): 141, the shell's status of `git`, `ls` or `yes` when a write of
theirs finds their reader gone (they die of SIGPIPE), said without a word as they do."""

_HELP_FRAMES = frozenset({"get_help", "show_help"})
"""click's functions that make and write a help page (`--help`, or a group named
without a command): the one the closed pipe cut was among them."""


def _help_cut(exc: SystemExit) -> bool:
    """Whether `exc` ends a help page's write that found stdout's reader gone: rich's
    answer (its console dup2s /dev/null onto stdout and raises `SystemExit(1)`) or
    click's (`PacifyFlushWrapper`, exit 1), raised while handling the `EPIPE`."""
    cause = exc.__context__
    if not isinstance(cause, OSError) or cause.errno != errno.EPIPE:
        return False
    frames = [
        *traceback.walk_tb(exc.__traceback__),
        *traceback.walk_tb(cause.__traceback__),
    ]
    return any(frame.f_code.co_name in _HELP_FRAMES for frame, _line in frames)


def _quiet_stdout() -> None:
    """Nothing more reaches the closed pipe (no `BrokenPipeError` at the interpreter's
    final flush of stdout, which Python says on stderr)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (a test's capture): nothing to flush
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one-line messages."""
    try:
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int):  # click returns the code of typer.Exit here
            return code
    except UsageError as exc:  # a command's own: said as click's are
        return _usage_error(exc, sys.argv[1:] if argv is None else argv)
    except USER_ERRORS as exc:  # the libraries' own (a bad SLA plan, a store down) too
        if state["debug"]:
            err.print_exception()
        _say_error(plain_store_error(str(exc)), exit_code(exc))
        return exit_code(exc)
    except _EXITS as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except _ABORTS:
        err.print("aborted")
        return 130
    except _USAGE_ERRORS as exc:
        return _usage_error(exc, sys.argv[1:] if argv is None else argv)
    except (_CtrlC, KeyboardInterrupt):  # Ctrl-C a command did not say itself (`Interrupted`)
        _say_error(_interrupted(sys.argv[1:] if argv is None else argv), 130)
        return 130
    except SystemExit as exc:
        if _help_cut(exc):  # `chainwatch --help | head -1`: normal use, no error
            _quiet_stdout()
            return HELP_CUT_EXIT
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":
            # click's answer to a broken pipe (`chainwatch ... | head`): stdout's reader
            # stopped; exit 1 as click does, but say so instead of nothing
            err.print(
                "[red]error:[/] the output's reader stopped reading (a closed pipe): "
                "the command stopped before its end",
                highlight=False,
            )
            return 1
        raise
    except Exception as exc:
        if state["debug"]:
            raise
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            # `> /dev/full`, a full disk or quota: the machine's state, not a bug
            _say_error(f"a write failed: {exc.strerror}", 1)
            return 1
        err.print(
            f"[red]internal error:[/] {type(exc).__name__}: {escape(cell_text(exc))} "
            "(rerun with --debug)"
        )
        return 1
    return 0


def run() -> None:
    """Console-script entry point. A child whose parent died exits non-zero also after a
    clean stop (chainwatch.lifeline)."""
    try:
        code: str | int | None = main()
    except SystemExit as exc:  # faust's worker leaves through SystemExit(0)
        code = exc.code
    sys.exit(lifeline.exit_status(code))


if __name__ == "__main__":
    run()
