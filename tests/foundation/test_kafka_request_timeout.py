"""`kafka.request_timeout_s`: how long the project's Kafka tooling waits for a broker.

It was a constant of 15 s: a deployment could not give a slow cluster longer, nor a
test a short one (six tests of the suite waited it out, ~100 s in all). Checked against
a broker that accepts and never answers: every way in, from the settings the caller
holds, gives up after the setting, not after 15 s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dead_servers import DeadServer
from kafka.errors import KafkaError
from pydantic import ValidationError

from chainwatch import kafka_admin, replay
from chainwatch.doctor import timestamps
from chainwatch.kafka_admin import KafkaUnreachable, admin_call_timeout_s, kafka_identities
from chainwatch.replay_run_list import list_runs
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings
from chainwatch.sink_runner import prepare_sink_topics

REQUEST_TIMEOUT_S = 1.0

WAKE_S = 2.0
"""What the deadline's thread may take to be woken and raise on a loaded machine."""

PROBE_BEFORE_S = 2.9
"""Under the 3 s every readiness probe waited before `kafka.probe_timeout_s`."""


@pytest.fixture
def silent_kafka() -> Iterator[str]:
    """A TCP listener that accepts every connection and never sends a byte."""
    server = DeadServer("silent")
    yield f"127.0.0.1:{server.port}"
    server.close()


def test_the_request_timeout_is_a_setting_of_15_s_with_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.upper().startswith("CHAINWATCH_")]:
        monkeypatch.delenv(key)
    assert Settings().kafka.request_timeout_s == 15  # production's wait, as before
    monkeypatch.setenv("CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S", "2.5")
    assert Settings().kafka.request_timeout_s == 2.5
    for refused in ("0.1", "301", "inf"):
        monkeypatch.setenv("CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S", refused)
        with pytest.raises(ValidationError, match="request_timeout_s"):
            Settings()


def _raised(call: Callable[[Settings], object]) -> Callable[[Settings], str]:
    def said(settings: Settings) -> str:
        with pytest.raises(KafkaUnreachable) as unreachable:
            call(settings)
        return str(unreachable.value)

    return said


def _runs_list(settings: Settings) -> str:
    error = list_runs(settings).kafka_error  # the runs on disk are listed all the same
    assert isinstance(error, KafkaUnreachable), error
    return str(error)


def _doctor(settings: Settings) -> str:
    check = timestamps(settings)  # a FAIL line, the other checks go on
    assert not check.ok, check
    return check.detail


WAYS_IN: dict[str, Callable[[Settings], str]] = {
    "topic set-up (every process's start)": _raised(prepare_topics),
    "a sink's start (partition check, topics)": _raised(prepare_sink_topics),
    "the sink's Kafka identities": _raised(
        lambda s: kafka_identities(
            s.kafka.bootstrap, ["scans"], request_timeout_s=s.kafka.request_timeout_s
        )
    ),
    "runs list": _runs_list,
    "doctor's timestamps check": _doctor,
}


@pytest.mark.parametrize("way_in", WAYS_IN.values(), ids=WAYS_IN.keys())
def test_kafka_not_answering_is_given_up_on_after_the_setting(
    way_in: Callable[[Settings], str], silent_kafka: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": silent_kafka, "request_timeout_s": REQUEST_TIMEOUT_S},  # type: ignore[arg-type]
    )
    started = time.monotonic()
    said = way_in(settings)
    # the admin call's deadline (the setting + 5 s), far below the 15 s it waited before
    assert time.monotonic() - started < admin_call_timeout_s(REQUEST_TIMEOUT_S) + WAKE_S
    assert f"Kafka at {silent_kafka}" in said


class _SlowAdmin:
    """An admin client that takes `connect_s` to start, as kafka-python does against a slow
    cluster within its own wait (`kafka.request_timeout_s`), then answers at once."""

    def __init__(self, connect_s: float) -> None:
        self.connect_s = connect_s

    def started(
        self, _bootstrap: str, *, request_timeout_s: float, timeout_s: float | None = None
    ) -> _SlowAdmin:
        assert self.connect_s < request_timeout_s  # kafka-python would not give up yet
        time.sleep(self.connect_s)  # the slow cluster's answer, not a wait on a condition
        return self

    def list_group_offsets(self, _groups: object) -> dict[str, object]:
        raise KafkaError("no group yet")  # the probe's answer: no group, lag unknown

    def describe_groups(self, groups: list[str]) -> dict[str, object]:
        return {groups[0]: {"group_state": "Stable", "members": ["w0", "w1"]}}

    def close(self) -> None:
        pass


def test_a_replays_probes_wait_as_long_as_kafka_python_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A replay's lag and group probes kept a fixed deadline (`LAG_PROBE_TIMEOUT_S`, 20 s):
    given a `kafka.request_timeout_s` above it for a slow cluster, a probe was given up on
    while kafka-python still waited within the setting (a replay's wait for its group
    failed). Here the fixed deadline is 0.5 s and the cluster answers in 1.5 s, within
    the setting of 3 s (production: 20 s, and a setting of 30 s)."""
    monkeypatch.setattr(replay, "LAG_PROBE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(kafka_admin, "admin_client", _SlowAdmin(connect_s=1.5).started)
    settings = Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": "127.0.0.1:1", "request_timeout_s": 3},  # type: ignore[arg-type]
    )
    assert replay._lag(settings) is None  # answered: no group yet
    scenario = tmp_path / "scenario.ndjson"
    scenario.write_text("")
    run = replay.ReplayRun(settings, scenario, partitions=1, progress=lambda *_a, **_k: None)
    run.wait_for_group(members=2, timeout_s=30)  # answered: both members, Stable


def test_the_readiness_probes_wait_the_probe_setting(
    silent_kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kafka.probe_timeout_s`: `replay`'s and `backtest`'s check, `doctor`'s and the
    long-running processes' `/readyz` watch waited a fixed 3 s, so a cluster that answers
    slower (TLS and SASL over a long link) failed them whatever its operator set."""
    from chainwatch import doctor
    from chainwatch.cli_context import require_kafka
    from chainwatch.errors import UserError
    from chainwatch.process import Startup

    for key in [k for k in os.environ if k.upper().startswith("CHAINWATCH_")]:
        monkeypatch.delenv(key)
    assert Settings().kafka.probe_timeout_s == 3.0
    quick = Settings(
        data_dir=tmp_path, kafka={"bootstrap_servers": silent_kafka, "probe_timeout_s": 0.5}
    )
    # a silent broker takes a probe its whole wait: 0.5 s now (its bound 0.5 + 2 s), at
    # least the fixed 3 s before
    began = time.monotonic()
    with pytest.raises(UserError, match="does not answer"):
        require_kafka(quick)
    assert time.monotonic() - began < PROBE_BEFORE_S
    began = time.monotonic()
    assert not doctor._kafka(quick).ok
    assert time.monotonic() - began < PROBE_BEFORE_S
    startup = Startup()
    ops: Any = object()  # a process with probes to answer: it watches Kafka
    with startup.watching_kafka(quick.kafka, ops):
        assert startup.kafka is not None
        assert startup.kafka.timeout_s == 0.5
