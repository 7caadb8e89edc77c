"""The CLI's promises: one-line errors with a fix, exit codes, secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from child_env import environ_without_settings

from chainwatch.free_port import free_port
from dashboards.errors import PublishError
from schemas.plan import PlanError
from sinks.errors import SinkError


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_a_malformed_setting_is_one_line_without_traceback() -> None:
    result = _run("config", env={"CHAINWATCH_KAFKA__PARTITIONS": "lots"})
    assert result.returncode == 1
    assert "CHAINWATCH_KAFKA__PARTITIONS" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_config_prints_effective_settings_with_secrets_masked() -> None:
    result = _run(
        "config", env={"CHAINWATCH_CLICKHOUSE__URL": "https://u:topsecret@ch.example:8443/db"}
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["clickhouse"]["url"] == "https://u:***@ch.example:8443/db"
    assert "topsecret" not in result.stdout + result.stderr


@pytest.mark.slow
def test_kafka_start_without_java_names_the_missing_tool(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = _run(
        "kafka",
        "start",
        env={
            "PATH": str(empty_bin),
            "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
            # free ports: a fixed one may be taken by another broker on the machine
            "CHAINWATCH_KAFKA__LOCAL_PORT": str(free_port()),
            "CHAINWATCH_KAFKA__LOCAL_CONTROLLER_PORT": str(free_port()),
        },
    )
    assert result.returncode == 1
    assert "java not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_kafka_commands_refuse_a_broker_they_do_not_manage() -> None:
    result = _run("kafka", "start", env={"CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "elsewhere:9092"})
    assert result.returncode == 1
    assert "not managed here" in result.stderr


@pytest.mark.integration
def test_kafka_start_refuses_a_port_in_use(kafka_bootstrap: str, tmp_path: Path) -> None:
    port = kafka_bootstrap.rsplit(":", 1)[1]
    env = {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "other"),
        "CHAINWATCH_KAFKA__LOCAL_PORT": port,
        "CHAINWATCH_KAFKA__LOCAL_CONTROLLER_PORT": "29995",
    }
    try:
        result = _run("kafka", "start", env=env)
    finally:  # a start that wrongly went ahead leaves no broker behind (a no-op otherwise)
        _run("kafka", "stop", env=env)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr
    assert "in use" in result.stderr


@pytest.mark.integration
def test_doctor_reports_each_part_and_fails_on_an_unreachable_clickhouse(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    healthy = _run(
        "doctor",
        env={
            "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CHAINWATCH_DATA_DIR": str(tmp_path / "ok"),
        },
    )
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "kafka" in healthy.stdout
    assert "ClickHouse 2" in healthy.stdout  # the embedded engine answered with its version
    assert "no store yet" in healthy.stdout
    assert not (tmp_path / "ok").exists()  # checked on a throwaway store: nothing made

    broken = _run(
        "doctor",
        env={
            "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CHAINWATCH_CLICKHOUSE__URL": "http://u:pw@127.0.0.1:9/db",
        },
    )
    assert broken.returncode == 1
    assert "FAIL" in broken.stdout
    assert "CHAINWATCH_CLICKHOUSE__URL" in broken.stdout
    assert "pw@" not in broken.stdout + broken.stderr


@pytest.mark.integration
def test_kafka_start_is_a_no_op_when_the_broker_already_runs(
    kafka_bootstrap: str, own_broker_dir: Path
) -> None:
    if os.environ.get("CHAINWATCH_TEST_BOOTSTRAP"):
        pytest.skip("the suite uses an external broker it does not manage")
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    env = {
        "CHAINWATCH_DATA_DIR": str(own_broker_dir),
        "CHAINWATCH_KAFKA__LOCAL_PORT": str(port),
        "CHAINWATCH_KAFKA__LOCAL_CONTROLLER_PORT": str(port + 1),
    }
    before = _run("kafka", "status", env=env)
    again = _run("kafka", "start", env=env)
    assert before.returncode == 0, before.stderr
    assert again.returncode == 0, again.stderr
    assert again.stdout.split("(pid")[1] == before.stdout.split("(pid")[1]  # same process
    assert "starting" not in again.stderr


@pytest.mark.parametrize(
    "error",
    [
        SinkError("cannot reach ClickHouse at http://h:8123; check the URL"),
        PublishError("Grafana at http://g:3000 refused: forbidden"),
        PlanError("plan.yaml: stage 'dye' has no duration"),
    ],
    ids=["sinks", "dashboards", "schemas"],
)
def test_a_library_error_is_a_one_line_user_error(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The libraries never import chainwatch, so they raise their own errors; the CLI
    reports each as it reports a UserError: one line, exit 1, no 'internal error'."""
    import sinks.clickhouse.connection
    from chainwatch import cli_context
    from chainwatch.cli import main
    from chainwatch.settings import Settings

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise error

    monkeypatch.setattr(sinks.clickhouse.connection, "open_client", refuse)
    # settings built here: the CLI's own would configure this process's logging
    monkeypatch.setitem(cli_context.state, "settings", Settings())
    assert main(["db", "migrate"]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {error}"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--bogus"], "No such option: --bogus"),
        (["sql", "--bogus", "SELECT 1"], "No such option: --bogus"),
        (["status", "--interval", "abc"], "Invalid value for '--interval'"),
        # the setting's range: the override skipped it, and 70000 listened on 4464
        (["gateway", "--port", "70000", "--tokens", "/no/tokens.yaml"], "'--port'"),
    ],
)
def test_a_usage_error_is_click_s_message_and_exit_2_not_an_internal_error(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from chainwatch.cli import main

    assert main(argv) == 2
    shown = capsys.readouterr().err
    assert says in shown
    assert "internal error" not in shown


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["sql", "SELECT 1", "--format", "xml"], "--format 'xml': expected table, csv or json"),
        (["simulate", "--out", "x", "--start", "today"], "--start 'today' is not an RFC 3339"),
        (["simulate", "--out", "x", "--anomaly", "late"], "--anomaly 'late': expected NAME=RATE"),
        (["simulate", "--out", "x", "--kafka"], "choose exactly one of --out FILE, --kafka"),
        (
            ["replay", "s.ndjson", "--until", "2027-03-12"],
            "--until '2027-03-12': timestamp must be RFC 3339",
        ),
        (["replay", "s.ndjson", "--run-id", "march"], "--run-id names a stored run"),
        (["replay", "s.ndjson", "--sink", "--run-id", "a b"], "--run-id 'a b': use 1-64"),
        (["import", "s.csv", "--kind", "scan", "--out", "x"], "--kind 'scan': expected one of"),
        (["import", "s.csv", "--kind", "scans", "--to", "s3"], "--to 's3': expected file or"),
        (["import", "s.csv", "--kind", "scans"], "--to file needs --out PATH"),
        (["import", "s.csv", "--format", "xls", "--out", "x"], "--format 'xls': expected csv"),
        (["dashboards", "export", " "], "DIR is empty: name a directory"),
        (["tokens", "create", "crm", "--role", "boss", "--file", "t.yaml"], "--role: Input"),
    ],
)
def test_a_command_s_own_check_of_its_command_line_is_a_usage_error(
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """What only the command can check (a timestamp, NAME=RATE, options that conflict) is
    the command line's fault as much as what click checks: exit 2, one line naming the
    option, where help is. These were `UserError`s: exit 1 and no hint. Nothing is
    written and nothing (Kafka, the store, the settings) is reached before."""
    from chainwatch import cli_context
    from chainwatch.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(cli_context.state, "settings", raising=False)
    command = " ".join(["chainwatch", *argv[: 2 if argv[0] in ("dashboards", "tokens") else 1]])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: {says}"), lines[0]
    assert lines[0].endswith(f"(see `{command} --help`)"), lines[0]
    assert "settings" not in cli_context.state  # refused before the settings were read
    assert list(tmp_path.iterdir()) == []


def _commands() -> dict[str, Any]:
    """Every command of the CLI by its words (groups too: `chainwatch gateway` takes options)."""
    import typer

    from chainwatch.cli import app

    found: dict[str, Any] = {}

    def walk(command: Any, words: tuple[str, ...]) -> None:
        found[" ".join(words)] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*words, name))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = _commands()
BAD_VALUES = ("not-a-value", "0", "-1", "1e999")
"""What an option may be given wrongly; one the parser takes is not a usage error."""


def _refusal(command: Any, args: list[str]) -> str | None:
    """How the parser alone (nothing runs) refuses `args` as a usage error (not by showing
    a help page), or None when it takes them."""
    try:
        command.make_context("chainwatch", list(args))
    except Exception as exc:
        if type(exc).__name__ != "NoArgsIsHelpError" and getattr(exc, "exit_code", 0) == 2:
            return str(exc.format_message())  # type: ignore[attr-defined]
    return None


@pytest.mark.parametrize("words", list(COMMANDS), ids=lambda w: w or "chainwatch")
def test_every_bad_option_or_argument_of_every_command_is_one_error_line(
    words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """click printed three lines (usage, a hint, `Error: ...`) where the README promises
    one `error:` line: which option, what was wrong or what it takes, where help is."""
    from chainwatch.cli import main

    command = COMMANDS[words]
    cases: list[tuple[list[str], str]] = [(["--no-such-option"], "--no-such-option")]
    for param in command.params:
        if param.param_type_name != "option" or param.is_flag:
            continue
        option = param.opts[0]
        cases.append(([option], option))  # its value left out
        # a value refused for this option (not a required argument missing besides)
        cases += [
            ([option, v], option)
            for v in BAD_VALUES
            if option in (_refusal(command, [option, v]) or "")
        ]
    if _refusal(command, []):  # a required argument or option left out
        cases.append(([], "Missing"))
    taken = [args for args, _ in cases if _refusal(command, args) is None]
    assert taken == []  # so main() stops before running anything
    capsys.readouterr()  # what the probes printed (a group's help)
    for args, named in cases:
        assert main([*words.split(), *args]) == 2, args
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.splitlines()
        assert len(lines) == 1, (args, captured.err)
        assert lines[0].startswith("error: "), lines
        assert named in lines[0], lines
        assert lines[0].endswith(f"(see `{' '.join(['chainwatch', *words.split()])} --help`)")


@pytest.mark.parametrize("words", list(COMMANDS), ids=lambda w: w or "chainwatch")
def test_help_of_every_command_is_still_its_help(
    words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from chainwatch.cli import main

    assert main([*words.split(), "--help"]) == 0
    assert "Usage:" in capsys.readouterr().out


def _sql_shows(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    columns: list[str],
    rows: list[list[str]],
    *options: str,
) -> str:
    """What `chainwatch sql` prints for a store that answers these rows."""
    import sinks.clickhouse.readers
    from chainwatch import cli_context
    from chainwatch.cli import main
    from chainwatch.settings import Settings
    from sinks.clickhouse.readers import Table

    class Reader:
        def query(self, sql: str) -> Table:
            return Table(columns, ["String"] * len(columns), rows)

        def close(self) -> None:
            pass

    monkeypatch.setattr(sinks.clickhouse.readers, "open_reader", lambda _settings: Reader())
    monkeypatch.setitem(cli_context.state, "settings", Settings())
    assert main(["sql", "SELECT 1", *options]) == 0
    return capsys.readouterr().out


def test_sql_csv_ends_its_lines_as_the_shell_reads_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: Python's csv default, CRLF, so `n=$(chainwatch sql ... --format csv | tail -1)`
    held `2795\r` and `[ "$n" -gt 0 ]` failed; ClickHouse's own CSV ends lines with LF."""
    shown = _sql_shows(monkeypatch, capsys, ["count()"], [["2795"]], "--format", "csv")
    assert shown == "count()\n2795\n"


def test_sql_shows_cells_and_names_as_text_never_as_markup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _sql_shows(monkeypatch, capsys, ["[/x]"], [["[/]"], ["[link=http://evil]click[/link]"]])
    for text in ("[/x]", "[/]", "[link=http://evil]click[/link]"):
        assert text in shown


def test_sql_shows_control_characters_of_a_cell_escaped_never_as_they_are(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CRM name is input: its escape sequences (set the window title, clear the
    screen) reached the terminal, or a file later read with `less -R`."""
    name = "Evil\x1b]0;PWNED\x07\x1b[2J\u202eNice"
    shown = _sql_shows(monkeypatch, capsys, ["customer_name"], [[name]])
    assert not {"\x1b", "\x07", "\u202e"} & set(shown)
    assert "Evil\\x1b]0;PWNED\\x07\\x1b[2J\\u202eNice" in shown


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env_key"),
    [
        (["status", "--once"], "CHAINWATCH_ENGINE__PLAN"),
        (["notify", "--check"], "CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS"),
        (["gateway", "--tokens", "BINARY"], None),
        (["plan-capacity", "--rate", "10", "--figures", "BINARY"], None),
    ],
    ids=["plan", "subscriptions", "tokens", "figures"],
)
def test_a_file_that_is_not_utf8_text_is_a_one_line_user_error(
    tmp_path: Path, args: list[str], env_key: str | None
) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"tokens:\n  - \xd0\x00\xff\xfe not text")
    env = {"CHAINWATCH_DATA_DIR": str(tmp_path / "data")}
    if env_key is not None:
        env[env_key] = str(binary)
    result = _run(*[str(binary) if a == "BINARY" else a for a in args], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert str(binary) in lines[0]
    assert "internal error" not in lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["plan-capacity", "--rate", "nan"],
        ["plan-capacity", "--rate", "1e308"],
        ["status", "--interval", "inf"],
        ["simulate", "--rate", "nan"],
    ],
)
def test_a_float_option_out_of_any_sane_range_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from chainwatch.cli import main

    assert main(argv) == 2
    assert "Invalid value" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "huge"),
    [
        ("--orders-in-flight", "100000000000000000000000000000"),
        ("--history-days", "100000000000000000"),
        ("--replication-factor", "99999999999999999999"),
    ],
)
def test_plan_capacity_refuses_a_number_past_any_deployment_as_a_usage_error(
    option: str, huge: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """They were taken and sized: `--orders-in-flight 1e29` printed 1,119,999,552,000,181.0 TB
    of RocksDB per worker, float noise, with exit status 0."""
    from chainwatch.cli import main

    assert main(["plan-capacity", "--rate", "10", option, huge]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"error: Invalid value for '{option}': "), line


@pytest.mark.parametrize("command", ["replay", "backtest"])
@pytest.mark.parametrize(
    ("until", "reason"),
    [
        ("2999-01-01T00:00:00Z", "timestamp is outside 1971-01-01 - 2100-01-01"),
        ("2027-02-30T00:00:00Z", "day is out of range for month"),
        ("2027-03-31T00:00:00", "timestamp has no UTC offset"),
    ],
)
def test_an_until_refused_says_why_not_that_it_lacks_an_offset(
    command: str, until: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A night-shift operator's `--until 2999-01-01T00:00:00Z` is RFC 3339 with an offset:
    it was refused as "expected RFC 3339 with an offset", the one thing it was."""
    from chainwatch.cli import main

    argv = [command, "examples/example_1_on_time.ndjson", "--until", until]
    if command == "backtest":
        argv += ["--plan", "schemas/plans/knitwear.yaml"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: --until {until!r}: "), lines[0]
    assert reason in lines[0], lines[0]
    assert lines[0].endswith(f"(see `chainwatch {command} --help`)"), lines[0]


def test_a_statement_that_is_not_utf8_is_refused_in_plain_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from chainwatch.cli import main

    assert main(["sql", "SELECT '\udcff'"]) == 2  # how Python passes the byte 0xff of argv
    assert capsys.readouterr().err.splitlines() == [
        "error: QUERY is not UTF-8 text (character 8) (see `chainwatch sql --help`)"
    ]


@pytest.mark.slow
def test_a_plan_that_is_a_pipe_is_a_one_line_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)
    result = _run(
        "status", "--once",
        env={"CHAINWATCH_DATA_DIR": str(tmp_path / "data"), "CHAINWATCH_ENGINE__PLAN": str(fifo)},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot read plan {fifo}: not a regular file " + (
        "(a directory, pipe or device)"
    )


@pytest.mark.slow
def test_stdout_closed_by_its_reader_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """`chainwatch simulate --out - | head`: click's answer to the broken pipe was a
    silent exit 1 (here for every command writing to stdout)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        result = subprocess.run(
            [sys.executable, "-m", "chainwatch", "simulate", "--out", "-", "--days", "3",
             "--orders-per-day", "500"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
            env={**os.environ, "CHAINWATCH_DATA_DIR": str(tmp_path / "data")},
        )  # fmt: skip
    finally:
        os.close(write)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the output's reader stopped reading (a closed pipe): the command stopped "
        "before its end"
    ]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize(
    "args", [["config"], ["gateway", "hash-token"], ["dashboards", "export", "DIR"]]
)
def test_an_output_with_no_room_is_one_line_not_an_internal_error(
    args: list[str], tmp_path: Path
) -> None:
    """`> /dev/full` (a full disk, a quota) ended in `internal error: OSError: [Errno 28]`."""
    argv = [str(tmp_path / "out") if a == "DIR" else a for a in args]
    env = environ_without_settings()
    env["CHAINWATCH_DATA_DIR"] = str(tmp_path / "data")
    with open("/dev/full", "w") as full:
        ran = subprocess.run(
            [sys.executable, "-m", "chainwatch", *argv],
            input="a-token\n", stdout=full, stderr=subprocess.PIPE, text=True, env=env,
            timeout=120, check=False,
        )  # fmt: skip
    assert ran.returncode == 1
    assert ran.stderr.strip() == "error: a write failed: No space left on device"
