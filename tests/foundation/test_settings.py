"""The one settings object: env prefix, nesting, secrets, defaults (README table)."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from chainwatch.cli import main
from chainwatch.cli_context import state
from chainwatch.replay_windows import window_ms
from chainwatch.settings import (
    Settings,
    child_environment,
    conflicting_variables,
    overlaid,
    unknown_variables,
)
from sinks.clickhouse.settings import MAX_TTL_DAYS
from streams.engine.limits import DAY_MS

README = Path(__file__).resolve().parents[2] / "README.md"


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_nested_env_vars_reach_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("CHAINWATCH_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("CHAINWATCH_ENGINE__CLOCK", "event")
    settings = Settings()
    assert settings.kafka.bootstrap == "broker-a:9092,broker-b:9092"
    assert not settings.kafka.is_local
    assert settings.kafka.partitions == 12
    assert settings.engine.clock == "event"


def test_a_malformed_value_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINWATCH_KAFKA__PARTITIONS", "many")
    with pytest.raises(ValidationError, match="partitions"):
        Settings()


@pytest.mark.parametrize(
    "servers",
    [
        "kafka:9O92",
        "kafka://kafka:9092",
        "",
        "a:9092,,b:9092",
        "a:0",
        "a:70000",
        "a :9092",
        "a:9092;b:9092",
    ],
)
def test_a_bootstrap_list_that_is_not_host_ports_is_refused_at_the_start(
    monkeypatch: pytest.MonkeyPatch, servers: str
) -> None:
    """The clients took a typo for a server that never answers: the long-running
    processes waited for it for ever, saying only that Kafka did not answer."""
    monkeypatch.setenv("CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS", servers)
    with pytest.raises(ValidationError, match="is not host:port"):
        Settings()


@pytest.mark.parametrize(
    ("servers", "taken"),
    [
        ("127.0.0.1:19092", "127.0.0.1:19092"),
        (
            "broker-0.kafka.svc:9093, broker-1.kafka.svc:9093",
            "broker-0.kafka.svc:9093,broker-1.kafka.svc:9093",
        ),
        ("[::1]:9092", "[::1]:9092"),
        ("kafka", "kafka"),  # the clients' default port, 9092
    ],
)
def test_a_bootstrap_list_of_host_ports_is_taken_without_the_spaces_beside_its_commas(
    monkeypatch: pytest.MonkeyPatch, servers: str, taken: str
) -> None:
    monkeypatch.setenv("CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS", servers)
    assert Settings().kafka.bootstrap == taken


def test_clickhouse_password_is_masked_everywhere_it_is_shown() -> None:
    settings = Settings(clickhouse={"url": "http://ops:s3cret@ch.example:8123/cw"})  # type: ignore[arg-type]
    shown = settings.redacted()
    assert shown["clickhouse"]["url"] == "http://ops:***@ch.example:8123/cw"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(shown)
    assert settings.to_env()["CHAINWATCH_CLICKHOUSE__URL"].endswith("s3cret@ch.example:8123/cw")


def test_a_clickhouse_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="http"):
        Settings(clickhouse={"url": "tcp://ch:9000"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://bot:S3CRETPW@ch.internal\u2101:8123", "normalise to URL delimiters"),
        ("http://bot:S3CRETPW@ch.internal:99999", "port out of range"),
    ],
)
def test_a_clickhouse_url_that_cannot_be_split_is_refused_without_quoting_it(
    url: str, reason: str
) -> None:
    """urlsplit's own error quoted the authority, password included; a port past 65535
    passed and failed later, at the first connection."""
    with pytest.raises(ValidationError) as caught:
        Settings(clickhouse={"url": url})  # type: ignore[arg-type]
    said = " ".join(error["msg"] for error in caught.value.errors())  # what `chainwatch` prints
    assert reason in said
    assert "S3CRETPW" not in said


@pytest.mark.parametrize(
    "url", ["http://127.1:8123", "http://2130706433:8123", "http://db.2:8123/cw"]
)
def test_a_clickhouse_url_with_a_short_numeric_host_or_a_numeric_looking_name_is_taken(
    url: str,
) -> None:
    """The webhooks' numeric-host check (schemas.urls) once applied to every URL: these
    connected before, and then stopped the sink at start. Only webhooks refuse them."""
    settings = Settings(clickhouse={"url": url})  # type: ignore[arg-type]
    assert settings.clickhouse.redacted_url() == url


def test_to_env_round_trips_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        kafka={"bootstrap_servers": "k:1", "topic_prefix": "p."},  # type: ignore[arg-type]
        engine={"app_id": "x1", "standby_replicas": 0},  # type: ignore[arg-type]
    )
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_readme_documents_every_setting() -> None:
    documented = set(re.findall(r"`(CHAINWATCH_[A-Z0-9_]+)`", README.read_text()))
    missing = [name for name in _env_names(Settings, "CHAINWATCH_") if name not in documented]
    assert missing == [], f"settings missing from the README's configuration table: {missing}"


def _shows(cell: str, value: object) -> bool:
    """Whether a cell of the README's table shows this default (numbers compared as numbers)."""
    if value is None or value == "":
        return cell == ("unset" if value is None else "empty")
    if not (cell.startswith("`") and cell.endswith("`")):
        return False
    shown = cell[1:-1]
    if isinstance(value, bool):
        return shown == str(value).lower()
    if isinstance(value, int | float):
        return re.fullmatch(r"[0-9.]+", shown) is not None and float(shown) == value
    return shown == str(value)


def _defaults(model: BaseModel, prefix: str) -> dict[str, object]:
    found: dict[str, object] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found |= _defaults(value, f"{prefix}{name.upper()}__")
        else:
            found[f"{prefix}{name.upper()}"] = value
    return found


def test_the_readme_table_shows_each_setting_s_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.upper().startswith("CHAINWATCH_")]:
        monkeypatch.delenv(key)
    table = README.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(CHAINWATCH_[A-Z0-9_]+)` \| ([^|]*?) \|", table, re.M))
    wrong = {
        name: (rows.get(name), value)
        for name, value in _defaults(Settings(), "CHAINWATCH_").items()
        if not _shows(rows.get(name, ""), value)
    }
    assert wrong == {}, f"README's configuration table (shown, actual default): {wrong}"


def test_the_engine_horizons_reach_its_limits_and_the_replay_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both bounded-state horizons are settings; the replay's window follows the shorter."""
    monkeypatch.setenv("CHAINWATCH_ENGINE__UNIT_LOOKBACK_DAYS", "8")
    monkeypatch.setenv("CHAINWATCH_ENGINE__CLOSED_ORDER_RETENTION_DAYS", "12.5")
    limits = Settings().engine.limits()
    assert limits.unit_lookback_ms == 8 * DAY_MS
    assert limits.closed_order_retention_ms == round(12.5 * DAY_MS)
    assert window_ms(limits) == 2 * DAY_MS  # a quarter of the shorter horizon


def test_a_worker_heartbeats_its_group_as_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A joining worker waits for the others to rejoin at their next heartbeat: faust's
    3 s made a replay's second worker wait up to 3 s for the first."""
    from chainwatch.runners import worker_app

    monkeypatch.setenv("CHAINWATCH_ENGINE__HEARTBEAT_INTERVAL_S", "0.5")
    app, _engine = worker_app(Settings(data_dir=tmp_path))
    assert app.conf.broker_heartbeat_interval == 0.5
    monkeypatch.delenv("CHAINWATCH_ENGINE__HEARTBEAT_INTERVAL_S")
    default, _engine = worker_app(Settings(data_dir=tmp_path, engine={"app_id": "other"}))
    assert default.conf.broker_heartbeat_interval == 1.0


def test_the_gateway_must_allow_more_connections_than_requests_in_flight() -> None:
    """With no connections to spare beyond `limit_concurrency`, a request beyond them is
    refused `too_many_connections` instead of waiting for a slot: uvicorn's old 503s."""
    for connections in (10, 64):
        with pytest.raises(ValidationError, match="must exceed limit_concurrency"):
            Settings(gateway={"limit_connections": connections, "limit_concurrency": 64})  # type: ignore[arg-type]
    assert Settings(gateway={"limit_connections": 65, "limit_concurrency": 64}).gateway


def test_heartbeats_must_fit_three_times_into_the_session() -> None:
    with pytest.raises(ValidationError, match="at most a third of session_timeout_s"):
        Settings(engine={"session_timeout_s": 6, "heartbeat_interval_s": 2.5})
    assert Settings(engine={"session_timeout_s": 6, "heartbeat_interval_s": 2}).engine


def test_a_nested_variable_that_names_no_setting_is_warned_of_with_the_closest() -> None:
    """pydantic-settings ignores them: a misspelt key left its setting at the default."""
    warnings = unknown_variables(
        {
            "CHAINWATCH_ENGINE__BATCHSIZE": "5",
            "CHAINWATCH_ENIGNE__PLAN": "p.yaml",
            "CHAINWATCH_KAFKA__PARTITIONS__X": "1",
            "CHAINWATCH_ENGINE__BATCH_SIZE": "5",  # a setting
            "chainwatch_kafka__partitions": "4",  # names are matched ignoring case
            "CHAINWATCH_HOOK_OPS": "https://hooks/x",  # a user's own (no nesting): not judged
            "OTHER__THING": "x",
        }
    )
    assert warnings == [
        "CHAINWATCH_ENGINE__BATCHSIZE is not a setting, ignored; "
        "did you mean CHAINWATCH_ENGINE__BATCH_SIZE?",
        "CHAINWATCH_ENIGNE__PLAN is not a setting, ignored; did you mean CHAINWATCH_ENGINE__PLAN?",
        "CHAINWATCH_KAFKA__PARTITIONS__X is not a setting, ignored; "
        "did you mean CHAINWATCH_KAFKA__PARTITIONS?",
    ]


def test_every_documented_nested_variable_names_a_setting() -> None:
    nested = [n for n in _env_names(Settings, "CHAINWATCH_") if "__" in n]
    assert nested
    assert unknown_variables(dict.fromkeys(nested, "")) == []


def _number_settings(model: type[BaseModel], prefix: str) -> dict[str, FieldInfo]:
    """Every int and float setting, by its variable name, the nested sections walked."""
    found: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= _number_settings(annotation, f"{prefix}{name.upper()}__")
        elif annotation in (int, float):
            found[f"{prefix}{name.upper()}"] = field
    return found


NUMBERS = _number_settings(Settings, "CHAINWATCH_")
FLOATS = [name for name, field in NUMBERS.items() if field.annotation is float]


def test_every_number_setting_has_an_upper_bound() -> None:
    """A duration, size or count with only a lower bound took `1e300`: a stop deadline a
    Timer cannot wait (the gateway's stop-deadline thread died on an OverflowError), a
    TTL past ClickHouse's DateTime (wrapped to 1999: rows dropped at once), a buffer that
    never fills before memory does."""
    unbounded = [
        name
        for name, field in NUMBERS.items()
        if not any(hasattr(m, "le") or hasattr(m, "lt") for m in field.metadata)
    ]
    assert len(FLOATS) > 20  # the walk found the sections' settings
    assert unbounded == []


def test_the_readme_table_states_each_upper_bound_it_names() -> None:
    """`at most N` in a row is what a value past it is refused at: a bound changed in
    the model and not in the table had users set a value the command then refused."""
    table = README.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(CHAINWATCH_[A-Z0-9_]+)` \| [^|]*? \| (.*) \|$", table, re.M))
    stated = 0
    wrong = {}
    for name, field in NUMBERS.items():
        said = re.search(r"at most ([0-9][0-9,]*)\b", rows.get(name, ""))
        if said is None:
            continue
        stated += 1
        bound = next(getattr(m, "le", None) for m in field.metadata if hasattr(m, "le"))
        if float(said.group(1).replace(",", "")) != bound:
            wrong[name] = (said.group(1), bound)
    assert stated >= 30  # the pattern still finds them
    assert wrong == {}, "README's configuration table (at most, the model's bound)"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300"])
@pytest.mark.parametrize("name", FLOATS)
def test_no_float_setting_takes_an_absurd_value_and_the_error_names_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """`CHAINWATCH_GATEWAY__SHUTDOWN_GRACE_S=inf` started the gateway, which then died on an
    internal OverflowError; now every command stops at start with one line naming it."""
    from chainwatch import cli_context
    from chainwatch.errors import UserError

    monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli_context, "state", {})
    with pytest.raises(UserError) as refused:
        cli_context.settings()
    message = str(refused.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message
    if value != "1e300":
        assert message == f"{name}: Input should be a finite number"


def test_a_section_s_own_check_is_said_without_pydantic_s_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka security that cannot work (docs/scaling.md) stops a command in one line; it
    read `CHAINWATCH_KAFKA: Value error, the local broker is PLAINTEXT: ...`."""
    from chainwatch import cli_context
    from chainwatch.errors import UserError

    for key in [k for k in os.environ if k.upper().startswith("CHAINWATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CHAINWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setattr(cli_context, "state", {})
    with pytest.raises(UserError) as refused:
        cli_context.settings()
    assert str(refused.value).startswith("CHAINWATCH_KAFKA: the local broker is PLAINTEXT: ")


def test_the_longest_ttl_stays_within_clickhouse_s_datetime() -> None:
    """ClickHouse's DateTime ends on 2106-02-07: `now + toIntervalDay(40000)` was 1999."""
    longest = Settings(clickhouse={"ttl_days": MAX_TTL_DAYS})  # type: ignore[arg-type]
    assert datetime.now(UTC).date() + timedelta(days=longest.clickhouse.ttl_days) < date(2106, 2, 7)
    with pytest.raises(ValidationError, match="ttl_days"):
        Settings(clickhouse={"ttl_days": MAX_TTL_DAYS + 1})  # type: ignore[arg-type]


def test_a_shutdown_grace_past_ten_minutes_is_refused_so_a_gateway_stop_waits_under_eleven() -> (
    None
):
    """The gateway's stop deadline grows with the grace (`stop_timeout_s`): the bound on
    `shutdown_grace_s` is what keeps that wait short (threading.TIMEOUT_MAX, ~292 years,
    did not)."""
    from chainwatch.commands.gateway import stop_timeout_s

    with pytest.raises(ValidationError, match="shutdown_grace_s"):
        Settings(gateway={"shutdown_grace_s": 600.5})  # type: ignore[arg-type]
    longest = Settings(gateway={"shutdown_grace_s": 600})  # type: ignore[arg-type]
    assert stop_timeout_s(longest) < 11 * 60


def test_a_setting_given_twice_in_two_cases_with_two_values_is_refused() -> None:
    """Names are matched ignoring case, and the later in the environment won: the
    setting depended on the order a shell or a supervisor exported them."""
    assert conflicting_variables(
        {
            "CHAINWATCH_ENGINE__BATCH_SIZE": "111",
            "chainwatch_engine__batch_size": "222",
            "CHAINWATCH_KAFKA__PARTITIONS": "4",
            "Chainwatch_Kafka__Partitions": "4",  # the same value: no doubt which one
            "CHAINWATCH_HOOK_OPS": "a",  # a user's own, read by its exact name
            "chainwatch_hook_ops": "b",
            "OTHER": "b",
        }
    ) == [
        "CHAINWATCH_ENGINE__BATCH_SIZE and chainwatch_engine__batch_size set the same "
        "setting to different values; unset all but one"
    ]


def test_the_cli_refuses_a_setting_given_twice_naming_both_not_their_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(state, "settings", raising=False)  # built again, from this env
    monkeypatch.setenv("CHAINWATCH_CLICKHOUSE__URL", "https://u:secret-one@ch.example:8443")
    monkeypatch.setenv("chainwatch_clickhouse__url", "https://u:secret-two@ch.example:8443")
    assert main(["config"]) == 1
    printed = " ".join(capsys.readouterr().err.split())
    assert "CHAINWATCH_CLICKHOUSE__URL and chainwatch_clickhouse__url set the same" in printed
    assert "secret-" not in printed


def test_a_child_gets_the_parents_settings_whatever_case_the_user_wrote() -> None:
    """A replay's workers run with the run's settings (its own app id, topics): laid
    over the environment, a user's lower-case spelling stayed beside them."""
    environ = {
        "chainwatch_engine__app_id": "mine",
        "chainwatch_engine": '{"app_id": "mine-too"}',
        "CHAINWATCH_HOOK_OPS": "https://hooks/x",  # a user's own: passed on
        "PATH": "/bin",
    }
    settings = Settings(engine={"app_id": "replay-abc"})
    env = child_environment(settings, environ)
    assert env["CHAINWATCH_ENGINE__APP_ID"] == "replay-abc"
    assert not {"chainwatch_engine__app_id", "chainwatch_engine"} & env.keys()
    assert env["CHAINWATCH_HOOK_OPS"] == "https://hooks/x"
    assert env["PATH"] == "/bin"
    assert conflicting_variables(env) == []


def test_what_a_parent_sets_for_its_children_replaces_the_users_spelling() -> None:
    """The demo gives its children their own database and clock: a user's lower-case
    spelling of one beside it was two values for one setting (now refused)."""
    env = overlaid(
        {"chainwatch_clickhouse__database": "mine", "PATH": "/bin"},
        {"CHAINWATCH_CLICKHOUSE__DATABASE": "demo_1"},
    )
    assert env == {"PATH": "/bin", "CHAINWATCH_CLICKHOUSE__DATABASE": "demo_1"}


def test_the_suite_and_the_benches_start_children_with_one_spelling_of_each_setting() -> None:
    """Names are matched ignoring case, and a child refuses a setting given in two
    spellings with two values. An environment cleaned of `CHAINWATCH_` names in upper case
    only, or `to_env()` laid over `os.environ`, kept a developer's or an operator's
    lower-case spelling beside the parent's (`chainwatch_data_dir` exported: a backtest
    test's child refused to start); `child_environment` and `.upper()` drop every one."""
    leaky = re.compile(
        r'(?<!\.upper\(\))\.startswith\("CHAINWATCH_"\)|\*\*os\.environ,\s*\*\*[\w.]*to_env\(\)'
    )
    root = README.parent
    found = [
        f"{path.relative_to(root)}:{text.count(chr(10), 0, match.start()) + 1}"
        for path in sorted([*(root / "tests").rglob("*.py"), *(root / "bench").rglob("*.py")])
        if path != Path(__file__).resolve()
        for text in [path.read_text(encoding="utf-8")]
        for match in leaky.finditer(text)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        # U+212A KELVIN SIGN: upper case of itself, lower case `k`: read as the same setting
        ("CHAINWATCH_KAFKA__PARTITIONS", "CHAINWATCH_\u212aAFKA__PARTITIONS", True),
        # U+0131 dotless i: upper case `I`, lower case itself: no setting's name
        ("CHAINWATCH_ENGINE__APP_ID", "chainwatch_engine__app_\u0131d", False),
    ],
)
def test_two_names_are_one_setting_exactly_when_the_settings_read_them_so(
    monkeypatch: pytest.MonkeyPatch, first: str, second: str, refused: bool
) -> None:
    """pydantic-settings compares names in lower case: names equal in upper case only are
    two variables to it, and names equal in lower case only one setting whose value was
    the environment's order."""
    for key in [k for k in os.environ if k.upper().startswith("CHAINWATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv(first, "4")
    monkeypatch.setenv(second, "8")
    read = Settings().model_dump()
    monkeypatch.delenv(first)
    monkeypatch.setenv(first, "4")  # now the later one
    assert (Settings().model_dump() != read) is refused
    assert bool(conflicting_variables({first: "4", second: "8"})) is refused
    child = overlaid({second: "8", "PATH": "/bin"}, {first: "4"})
    assert (second not in child) is refused


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (
            '{"bootstrap_servers": "s3cr3t',
            "not valid JSON (Unterminated string starting at character 23)",
        ),
        ("", "not valid JSON (Expecting value at character 1)"),
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply to read"),
        ('{"a": ' * 50_000 + "1" + "}" * 50_000, "JSON nested too deeply to read"),
    ],
    ids=["unterminated", "empty", "deep-lists", "deep-objects"],
)
def test_a_section_s_json_that_cannot_be_read_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str, said: str
) -> None:
    """pydantic-settings' `SettingsError` named the field only and json's `RecursionError`
    went through it: both were an "internal error" asking for --debug."""
    monkeypatch.delitem(state, "settings", raising=False)
    monkeypatch.setenv("CHAINWATCH_KAFKA", value)
    monkeypatch.setenv("CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS", "[::1]:9092")  # text, not JSON
    assert main(["config"]) == 1
    printed = capsys.readouterr().err
    assert printed == f"error: CHAINWATCH_KAFKA: {said}\n"
