"""Issue 17: a second `make demo` starts clean, and Ctrl-C says what still runs and where
the logs are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from chainwatch.demo import (
    SIMULATED_CLOCK_ENV,
    _farewell,
    _run_env,
    child_environments,
    for_this_run,
)
from chainwatch.settings import Settings
from schemas.common import format_utc
from schemas.plan import load_plan
from streams.ingest.batch import judge_value


def test_each_demo_run_has_its_own_topics_engine_and_database(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path, kafka={"topic_prefix": "site1."})
    first = for_this_run(base, "20261130071500")
    second = for_this_run(base, "20261130081500")

    assert first.kafka.topic_prefix == "site1.demo-20261130071500."  # the user's prefix kept
    assert first.engine.app_id == "demo-20261130071500"
    assert first.clickhouse.database == "demo_20261130071500"
    assert {second.kafka.topic_prefix, second.engine.app_id, second.clickhouse.database}.isdisjoint(
        {first.kafka.topic_prefix, first.engine.app_id, first.clickhouse.database}
    )
    env = _run_env(first)  # what the worker, sink, gateway and simulator see
    assert env == {
        "CHAINWATCH_KAFKA__TOPIC_PREFIX": "site1.demo-20261130071500.",
        "CHAINWATCH_ENGINE__APP_ID": "demo-20261130071500",
        "CHAINWATCH_CLICKHOUSE__DATABASE": "demo_20261130071500",
    }


def test_after_ctrl_c_the_demo_says_whether_kafka_runs_and_where_logs_are(
    tmp_path: Path,
) -> None:
    run = for_this_run(Settings(data_dir=tmp_path), "20261130071500")
    for stopped, expected in [
        (True, "kafka stopped"),
        (False, "kafka keeps running (it ran before the demo); `chainwatch kafka stop` stops it"),
    ]:
        console = Console(record=True, width=80)
        _farewell(run, console, broker_stopped=stopped, ran=True)
        text = console.export_text()
        assert expected in text
        assert f"logs: {run.log_dir}/demo-*.log" in text
        assert "CHAINWATCH_CLICKHOUSE__DATABASE=demo_20261130071500 chainwatch sql" in text


def test_a_demo_that_never_started_points_at_no_logs_and_no_data(tmp_path: Path) -> None:
    """Kafka did not answer: the farewell named a run's logs and data that do not exist."""
    run = for_this_run(Settings(data_dir=tmp_path), "20261130071500")
    console = Console(record=True, width=80)
    _farewell(run, console, broker_stopped=True, ran=False)
    assert console.export_text().strip() == "kafka stopped"


_STOP_PROBE = """
import os, signal, sys
from chainwatch.demo import interrupted_by_stop_signals

signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's `&` leaves it
for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    try:
        with interrupted_by_stop_signals():
            os.kill(os.getpid(), sig)
            signal.sigtimedwait([], 0)  # let the handler run
            print(sig.name, "ignored")
    except KeyboardInterrupt:
        print(sig.name, "stops")
print("restored", signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
      signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
"""


@pytest.mark.slow
def test_sigterm_sighup_and_an_inherited_ignored_ctrl_c_stop_the_demo() -> None:
    """A supervisor's SIGTERM, a closed terminal, and Ctrl-C after `make demo &` each stop
    the demo (and so its children) as Ctrl-C does; the process's handlers come back after."""
    result = subprocess.run(
        [sys.executable, "-c", _STOP_PROBE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "SIGTERM stops",
        "SIGHUP stops",
        "SIGINT stops",
        "restored True True",
    ]


def test_the_demo_gateway_takes_the_simulated_factory_s_times_ahead_of_the_wall_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulator posts event times that run ahead of the wall clock (about a simulated
    week per minute); a gateway refusing them as timestamp_future dead-lettered every
    record after the demo's first seconds, and the demo showed almost no alerts."""
    ahead = datetime.now(UTC) + timedelta(days=3650)  # a demo left running for days
    scan = {
        "event_id": "demo-1", "order_id": "DEMOPO-000001", "stage": "dyeing",
        "action": "started", "unit_id": "DYE-01", "event_time": format_utc(ahead),
    }  # fmt: skip

    def judged(settings: Settings) -> object:
        skew = timedelta(seconds=settings.gateway.max_clock_skew_s)  # as the gateway does
        value = json.dumps(scan).encode()
        return judge_value(0, value, "scans", "order_id", load_plan(None), skew).reason_code

    for key, value in SIMULATED_CLOCK_ENV.items():
        monkeypatch.setenv(key, value)
    assert Settings().engine.clock == "event"
    assert judged(Settings()) is None
    monkeypatch.delenv("CHAINWATCH_GATEWAY__MAX_CLOCK_SKEW_S")
    assert judged(Settings()) == "validation_failed"  # what a default gateway does


@pytest.mark.parametrize("port", ["9100", "65535"])
def test_with_a_metrics_port_set_the_demo_s_sink_and_notifier_get_a_port_each(
    monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    """`CHAINWATCH_METRICS_PORT` is the sink's and the notifier's, each binding exactly it:
    the demo passed it on to both, the notifier found it taken by the sink and exited at
    start, and `make demo` stopped ("a demo process exited"). Each child now reads its own."""
    env = {**os.environ, "CHAINWATCH_METRICS_PORT": port}
    envs = child_environments(Settings(metrics_port=int(port)), env, ["worker", "sink", "notify"])

    def metrics_port(child_env: dict[str, str]) -> int:  # as the child reads its settings
        with monkeypatch.context() as m:
            m.setattr(os, "environ", child_env)
            return Settings().metrics_port

    sink, notify = metrics_port(envs["sink"]), metrics_port(envs["notify"])
    assert sink == int(port)  # the port the user set is the sink's
    assert notify not in (0, sink)
    assert envs["worker"] == env  # the worker's port is the engine's own setting


def test_without_a_metrics_port_the_demo_s_children_get_the_environment_as_it_is() -> None:
    env = {"CHAINWATCH_METRICS_PORT": "0", "PATH": "/usr/bin"}
    envs = child_environments(Settings(metrics_port=0), env, ["sink", "notify"])
    assert envs == {"sink": env, "notify": env}
