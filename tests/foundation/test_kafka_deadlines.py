"""Every Kafka call of the tooling has a deadline: a broker that accepts and never answers.

The suite once hung for its whole budget in `chainwatch/replay.py:_lag`
(`end_offsets` without a timeout, blocked in kafka-python's selector). These
tests point the same code at a socket that accepts connections and says
nothing, and require a clear error within a bound.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dead_servers import DeadServer
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotControllerError,
    TopicAuthorizationFailedError,
    UnknownBrokerIdError,
)

from chainwatch import kafka_admin, replay, replay_runs
from chainwatch.errors import UserError
from chainwatch.free_port import free_port
from chainwatch.kafka_admin import (
    KafkaDeadlineExceeded,
    KafkaRefused,
    KafkaUnreachable,
    bounded,
    create_missing_topics,
    refusal,
    retry_until_reachable,
)
from chainwatch.settings import Settings
from sinks import topic_read
from sinks.topic_read import TopicUnreadable


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A TCP listener that accepts every connection and never sends a byte."""
    server = DeadServer("silent")
    yield f"127.0.0.1:{server.port}"
    server.close()


def test_bounded_returns_the_value_and_raises_the_callers_error() -> None:
    assert bounded(lambda: 42, timeout_s=5, what="a value") == 42
    with pytest.raises(ZeroDivisionError):
        bounded(lambda: 1 // 0, timeout_s=5, what="a division")


def test_bounded_gives_up_on_a_call_that_never_returns() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(KafkaDeadlineExceeded, match=r"within 1 s$"):
        bounded(lambda: release.wait(60), timeout_s=1, what="a stuck call")
    assert time.monotonic() - started < 5
    with pytest.raises(KafkaDeadlineExceeded, match=r"within 0\.5 s$"):  # not "within 0s"
        bounded(lambda: release.wait(60), timeout_s=0.5, what="a stuck call")
    release.set()


def test_the_replay_lag_probe_fails_clearly_against_a_silent_broker(
    silent_broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "LAG_PROBE_TIMEOUT_S", 3.0)
    settings = Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": silent_broker, "request_timeout_s": 1},  # type: ignore[arg-type]
    )
    started = time.monotonic()
    with pytest.raises(UserError):
        replay._lag(settings)
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_waiting_for_the_engine_ends_at_its_deadline_against_a_silent_broker(
    silent_broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "LAG_PROBE_TIMEOUT_S", 2.0)
    settings = Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": silent_broker, "request_timeout_s": 1},  # type: ignore[arg-type]
    )
    messages: list[str] = []
    started = time.monotonic()
    with pytest.raises(UserError, match="did not finish within 4s"):
        replay.wait_until_idle(
            settings, [], lambda message, **_counts: messages.append(message), timeout_s=4
        )
    assert time.monotonic() - started < 20
    assert any("Kafka probe failed" in m for m in messages)


def test_a_long_running_process_waits_for_kafka_with_a_growing_delay() -> None:
    """A worker, sink or notifier started before the broker retries instead of exiting."""
    outcomes: list[Exception | str] = [
        KafkaUnreachable("cannot reach Kafka at x"),
        KafkaUnreachable("cannot reach Kafka at x"),
        KafkaUnreachable("cannot reach Kafka at x"),
        "topics ready",
    ]
    slept: list[float] = []

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retry_until_reachable(call, process="sink", sleep=slept.append) == "topics ready"
    assert slept == [1.0, 2.0, 4.0]


def test_only_an_unreachable_broker_is_retried() -> None:
    def call() -> None:
        raise UserError("the plan file is malformed")

    with pytest.raises(UserError, match="malformed"):
        retry_until_reachable(call, process="worker", sleep=lambda _s: None)


@pytest.mark.parametrize("runner", ["sink", "notifier"])
def test_a_drain_run_fails_at_once_in_one_line_when_kafka_does_not_answer(
    runner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sink --drain` / `notify --drain` end a batch job: no waiting for Kafka for ever."""
    from chainwatch import notify_runner, sink_runner

    attempts: list[str] = []

    def unreachable(*_args: object, **_kwargs: object) -> None:
        if attempts:
            raise AssertionError("a drain run tried Kafka again")
        attempts.append("tried")
        raise KafkaUnreachable("cannot reach Kafka at 127.0.0.1:9 (KafkaConnectionError)")

    monkeypatch.setenv("CHAINWATCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("CHAINWATCH_METRICS_PORT", "0")
    subscriptions = tmp_path / "subscriptions.yaml"  # its endpoints' series start first
    subscriptions.write_text(
        '{"endpoints": [{"name": "x", "url": "https://h.example/x", "format": "slack"}]}'
    )
    monkeypatch.setenv("CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS", str(subscriptions))
    monkeypatch.setenv("CHAINWATCH_WEBHOOKS__ALLOWED_HOSTS", "h.example")
    settings = Settings()
    monkeypatch.setattr(sink_runner, "prepare_sink_topics", unreachable)
    monkeypatch.setattr(notify_runner, "ensure_notify_topics", unreachable)

    def drain() -> object:
        if runner == "sink":
            return sink_runner.run_sink(settings, drain=True, mappers={})
        return notify_runner.run_notify(settings, drain=True)

    with pytest.raises(KafkaUnreachable, match=r"127\.0\.0\.1:9"):
        drain()
    assert attempts == ["tried"]


@pytest.mark.slow  # a sink process and one connection attempt against the silent broker
@pytest.mark.timeout(120)
def test_the_sink_started_without_kafka_keeps_waiting_for_it(
    silent_broker: str, tmp_path: Path
) -> None:
    """The `kill9` + broker fault bench saw a sink started during a broker outage exit 1."""
    env = {
        **os.environ,
        "CHAINWATCH_DATA_DIR": str(tmp_path),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": silent_broker,
        "CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S": "2",  # each attempt to reach it (15 s by default)
        "CHAINWATCH_METRICS_PORT": "0",
        "CHAINWATCH_LOG_FORMAT": "json",
    }
    with subprocess.Popen(  # its exit closes the pipe
        [sys.executable, "-m", "chainwatch", "sink"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as sink:
        try:
            assert sink.stderr is not None
            while True:  # until the first retry is announced (after a connection attempt)
                line = sink.stderr.readline()
                assert line, f"the sink exited with {sink.wait(timeout=10)}"
                if '"kafka.unreachable"' in line:
                    break
            assert '"retry_in_s": 1.0' in line
            assert sink.poll() is None
        finally:
            sink.kill()
            sink.wait(timeout=30)


class _SlowMetadataAdmin:
    """An admin whose broker accepts topics and then lists them only after a while."""

    def __init__(self, ready_after_ms: int) -> None:
        self.ready_after_ms = ready_after_ms
        self.created: list[str] = []

    def list_topics(self) -> list[str]:
        return ["already-there"]

    def create_topics(self, wanted: dict[str, object], **options: object) -> None:
        assert not options.get("wait_for_metadata")  # kafka-python's own wait is 10 s
        self.created.extend(wanted)

    def wait_for_topics(self, names: list[str], timeout_ms: int) -> None:
        assert names == self.created
        if timeout_ms < self.ready_after_ms:
            raise KafkaTimeoutError(f"Topics not ready after {timeout_ms}ms")

    def close(self) -> None:
        pass


def test_new_topics_get_the_projects_deadline_to_show_in_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loaded broker took over kafka-python's 10 s to list new topics: a sink's start-up
    failed in the suite. They get 90 s, and a clear error after it."""
    slow = _SlowMetadataAdmin(ready_after_ms=30_000)
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: slow)
    kafka_admin.create_missing_topics(
        "127.0.0.1:1",
        {"already-there": {}, "cw.scans": {}, "cw.alerts": {}},
        request_timeout_s=15,
        partitions=4,
    )
    assert slow.created == ["cw.scans", "cw.alerts"]

    never = _SlowMetadataAdmin(ready_after_ms=10**9)
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: never)
    with pytest.raises(
        KafkaUnreachable, match="did not list the 1 topics it created within 90 s"
    ):  # waited out by a long-running process: the next attempt finds them
        kafka_admin.create_missing_topics(
            "127.0.0.1:1", {"cw.scans": {}}, request_timeout_s=15, partitions=4
        )


def _probe(url: str) -> tuple[int, object] | None:
    """(status, JSON body) of a GET, or None while nothing answers there."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as answer:
        return answer.code, json.loads(answer.read())
    except OSError:
        return None


@pytest.mark.parametrize("process", ["worker", "sink", "notifier"])
def test_a_process_waiting_for_kafka_is_alive_and_not_ready_on_its_probes(
    process: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker, the sink and the notifier served no `/healthz` while they waited for
    Kafka (connection refused for as long as the broker was away): a liveness probe
    (deploy/k8s: 4 x 15 s) killed the process it was meant to let wait."""
    from chainwatch import notify_runner, runners, sink_runner

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    seen: list[object] = []

    def kafka_away(*_args: object, **_kwargs: object) -> None:
        """One connection attempt, during which the probes are asked (they answer from a
        thread of their own); then an error that is not retried stops the process."""
        seen.extend([_probe(f"{base}/healthz"), _probe(f"{base}/readyz")])
        raise UserError("the test is done")

    subscriptions = tmp_path / "subscriptions.yaml"
    subscriptions.write_text(
        '{"endpoints": [{"name": "x", "url": "https://h.example/x", "format": "slack"}]}'
    )
    settings = Settings(
        data_dir=tmp_path,
        metrics_port=port,
        kafka={"bootstrap_servers": "127.0.0.1:9"},  # type: ignore[arg-type]
        engine={"metrics_port": port},  # type: ignore[arg-type]
        webhooks={"subscriptions": subscriptions, "allowed_hosts": "h.example"},  # type: ignore[arg-type]
    )
    run: Callable[[Settings], object]
    if process == "worker":
        monkeypatch.setattr(runners, "prepare_worker_topics", kafka_away)
        run = runners.run_worker
    elif process == "sink":
        monkeypatch.setattr(sink_runner, "prepare_sink_topics", kafka_away)
        run = sink_runner.run_sink
    else:
        monkeypatch.setattr(notify_runner, "ensure_notify_topics", kafka_away)
        run = notify_runner.run_notify
    with pytest.raises(UserError, match="the test is done"):
        run(settings)
    assert seen == [
        (200, {"alive": True, "waiting_for": "Kafka at 127.0.0.1:9"}),
        (503, {"ready": False, "reasons": ["waiting for Kafka at 127.0.0.1:9"]}),
    ]
    assert _probe(f"{base}/healthz") is None  # the port is released


def test_the_status_of_a_broker_process_that_does_not_answer_is_one_line_of_ours(
    silent_broker: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`chainwatch kafka status` printed kafka-python's five connection errors before its
    own line when the broker's process was alive and its port said nothing."""
    from chainwatch import local_kafka
    from chainwatch.local_kafka import LocalBroker

    # a silent port answers no probe at any length: the status waits it out (3 s before)
    monkeypatch.setattr(local_kafka, "STATUS_PROBE_S", 0.5)

    settings = Settings(
        data_dir=tmp_path,
        kafka={"local_port": int(silent_broker.rsplit(":", 1)[1])},  # type: ignore[arg-type]
    )
    settings.kafka_dir.mkdir(parents=True)
    (settings.kafka_dir / "broker.pid").write_text(str(os.getpid()))  # a process that lives
    with caplog.at_level(logging.INFO):
        status = LocalBroker(settings).status()
    assert (status.running, status.detail) == (False, "process alive but not answering")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("kafka")] == []


_STOPPED_WHILE_WAITING = """
import os, signal, sys, time
from chainwatch import notify_runner, runners, sink_runner
from chainwatch.logs import configure_logging
from chainwatch.settings import Settings


def kafka_away(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # a supervisor stops the waiting process
    time.sleep(60)  # a connection attempt in progress, which the signal interrupts


configure_logging("info", "json")
process = sys.argv[1]
if process == "worker":
    runners.prepare_worker_topics = kafka_away
    runners.run_worker(Settings())
elif process == "sink":
    sink_runner.prepare_sink_topics = kafka_away
    sink_runner.run_sink(Settings())
else:
    notify_runner.ensure_notify_topics = kafka_away
    print("summed over endpoints:", notify_runner.run_notify(Settings()).endpoints)
print("returned")
"""


@pytest.mark.parametrize("process", ["worker", "sink", "notifier"])
def test_a_stop_signal_while_waiting_for_kafka_stops_the_process_cleanly(
    process: str, tmp_path: Path
) -> None:
    """SIGTERM during the wait for Kafka killed the process by the signal (status 143,
    no `process_stopped` line); it now stops as it does once running."""
    subscriptions = tmp_path / "subscriptions.yaml"
    subscriptions.write_text(
        '{"endpoints": [{"name": "x", "url": "https://h.example/x", "format": "slack"}]}'
    )
    env = {
        **os.environ,
        "CHAINWATCH_DATA_DIR": str(tmp_path),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "CHAINWATCH_METRICS_PORT": "0",
        "CHAINWATCH_ENGINE__METRICS_PORT": "0",
        "CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS": str(subscriptions),
        "CHAINWATCH_WEBHOOKS__ALLOWED_HOSTS": "h.example",
    }
    done = subprocess.run(
        [sys.executable, "-c", _STOPPED_WHILE_WAITING, process],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the summary a notifier stopped so prints (`notify: 0 alert records read ...; over N
    # endpoints`) counts the subscriptions file's endpoint: it said "over 0 endpoints"
    said = ["summed over endpoints: 1"] if process == "notifier" else []
    assert done.stdout.splitlines() == [*said, "returned"]
    assert '"event": "process_signalled"' in done.stderr
    assert '"signal": "SIGTERM"' in done.stderr
    stopped = [line for line in done.stderr.splitlines() if '"process_stopped"' in line]
    assert len(stopped) == 1, done.stderr[-2000:]
    assert '"outcome": "ok"' in stopped[0]
    # its start was said before the wait (it said nothing of it while waiting), once
    started = [line for line in done.stderr.splitlines() if '"process_starting"' in line]
    assert len(started) == 1, done.stderr[-2000:]
    assert done.stderr.index('"process_starting"') < done.stderr.index('"process_signalled"')


def test_a_refusal_to_create_topics_is_one_line_saying_why_and_what_to_check(
    kafka_bootstrap: str,
) -> None:
    """The suite's broker is one: a replication factor of 3 is refused for good. The
    worker said it as an 'internal error' of 9 KB (kafka-python's request and answer)."""
    name = f"refused-{os.getpid()}-{time.monotonic_ns()}"
    with pytest.raises(KafkaRefused) as refused:
        create_missing_topics(
            kafka_bootstrap, {name: {}}, request_timeout_s=15, partitions=1, replication_factor=3
        )
    text = str(refused.value)
    assert "InvalidReplicationFactorError" in text
    assert "only 1 broker" in text  # the broker's own reason
    assert "CHAINWATCH_KAFKA__REPLICATION_FACTOR" in text
    assert len(text) < 500
    assert "\n" not in text
    assert isinstance(refused.value, UserError)  # the CLI's one line and exit 1


def test_a_refusal_whose_reason_has_quotes_keeps_it() -> None:
    """Python's repr quotes a message holding an apostrophe with double quotes."""
    from kafka.errors import InvalidConfigurationError

    text = "Request '...' failed: CreatableTopicResult(error_message=\"Invalid value 'x' for a\")"
    refused = refusal(InvalidConfigurationError(text), "to create 1 topics")
    assert "Invalid value 'x' for a;" in str(refused)


class _FailingAdmin:
    """An admin whose `step` (list_topics, create_topics, delete_topics) raises `error`,
    or never returns when `error` is None (a broker that stalls mid-start)."""

    def __init__(self, step: str, error: BaseException | None) -> None:
        self.step, self.error = step, error
        self.release = threading.Event()
        self.closed = False

    def _maybe_fail(self, step: str) -> None:
        if step != self.step:
            return
        if self.error is None:
            self.release.wait(30)
        else:
            raise self.error

    def list_topics(self) -> list[str]:
        self._maybe_fail("list_topics")
        return ["cw-x"]

    def create_topics(self, wanted: dict[str, object], **_options: object) -> None:
        self._maybe_fail("create_topics")

    def wait_for_topics(self, names: list[str], timeout_ms: int) -> None:
        self._maybe_fail("wait_for_topics")

    def delete_topics(self, names: list[str]) -> None:
        self._maybe_fail("delete_topics")

    def close(self) -> None:
        self.closed = True
        self.release.set()


@pytest.mark.parametrize(
    ("step", "error", "said"),
    [
        (
            "list_topics",
            KafkaTimeoutError("Request timed out"),
            "KafkaTimeoutError: Request timed out",
        ),
        (
            "list_topics",
            KafkaConnectionError("socket disconnected"),
            "KafkaConnectionError: socket disconnected",
        ),
        ("list_topics", None, "no answer within 0.3 s"),
        ("create_topics", NotControllerError("no controller yet"), "NotControllerError, not now"),
        ("create_topics", None, "no answer within 0.3 s"),
        # kafka-python after two NotControllerErrors; a controller id not in its metadata
        (
            "create_topics",
            RuntimeError("Failed to find active controller id!"),
            "no active controller found, not now",
        ),
        ("create_topics", UnknownBrokerIdError("3"), "UnknownBrokerIdError: 3"),
        (
            "wait_for_topics",
            KafkaTimeoutError("Topics not ready after 90000ms: {'cw.scans': 'leader -1'}"),
            "KafkaTimeoutError: Topics not ready after 90000ms: {'cw.scans': 'leader -1'}",
        ),
    ],
)
def test_kafka_failing_while_topics_are_created_is_unreachable_in_one_line(
    step: str, error: BaseException | None, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python's errors escaped as they were: not retried by a long-running process
    (which exited), "internal error: KafkaTimeoutError" from the CLI; a stalled call hung."""
    admin = _FailingAdmin(step, error)
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: admin)
    monkeypatch.setattr(kafka_admin, "CALL_MARGIN_S", 0)
    monkeypatch.setattr(kafka_admin, "CREATE_TIMEOUT_MS", 0)
    started = time.monotonic()
    with pytest.raises(KafkaUnreachable) as unreachable:
        create_missing_topics(
            "10.0.0.1:9092", {"cw.scans": {}}, request_timeout_s=0.3, partitions=1
        )
    assert time.monotonic() - started < 5
    message = str(unreachable.value)
    assert message.startswith("Kafka at 10.0.0.1:9092 did not ")
    assert f"({said})" in message
    assert "\n" not in message
    assert admin.closed
    # so a worker, sink or notifier waits for Kafka instead of exiting
    outcomes: list[BaseException | None] = [unreachable.value, None]

    def call() -> str:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure
        return "topics ready"

    assert retry_until_reachable(call, process="sink", sleep=lambda _s: None) == "topics ready"


def test_a_refusal_while_topics_are_created_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = TopicAuthorizationFailedError("error_message='not allowed'")
    admin = _FailingAdmin("create_topics", refused)
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: admin)
    with pytest.raises(KafkaRefused, match=r"refused to create 1 topics .*not allowed"):
        create_missing_topics("10.0.0.1:9092", {"cw.scans": {}}, request_timeout_s=15, partitions=1)


def test_topics_never_listed_for_want_of_rights_are_refused_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kafka-python's `wait_for_topics` turns every topic's reason into one retriable
    timeout: a refusal was retried for ever, its reason dropped."""
    pending = "{'cw.scans': 'TopicAuthorizationFailedError'}"
    admin = _FailingAdmin("wait_for_topics", KafkaTimeoutError(f"Topics not ready: {pending}"))
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: admin)
    with pytest.raises(KafkaRefused, match="TopicAuthorizationFailedError"):
        create_missing_topics("10.0.0.1:9092", {"cw.scans": {}}, request_timeout_s=15, partitions=1)


@pytest.mark.parametrize("error", [KafkaTimeoutError("Request timed out"), None])
def test_deleting_a_replays_topics_fails_in_one_line(
    error: BaseException | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _FailingAdmin("delete_topics", error)
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _bootstrap, **_: admin)
    monkeypatch.setattr(kafka_admin, "CALL_MARGIN_S", 0)
    settings = Settings(
        data_dir=tmp_path,
        kafka={
            "bootstrap_servers": "10.0.0.1:9092",
            "topic_prefix": "cw-",
            "request_timeout_s": 0.5,
        },  # type: ignore[arg-type]
    )
    with pytest.raises(KafkaUnreachable, match="did not delete the run's 1 topics"):
        replay_runs.delete_run_topics(settings)
    assert admin.closed


class _NeverFlushed:
    def __init__(self) -> None:
        self.closed = False

    def flush(self, timeout: float) -> None:
        raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")

    def close(self, timeout: float) -> None:
        self.closed = True


def test_the_simulators_kafka_output_fails_in_one_line_when_kafka_does_not_acknowledge() -> None:
    from chainwatch.simulator_outputs.kafka_out import KafkaPublisher

    publisher = KafkaPublisher.__new__(KafkaPublisher)  # no broker: only its close is tried
    publisher.bootstrap, publisher._closed = "10.0.0.1:9092", False
    publisher._producer = _NeverFlushed()  # type: ignore[assignment]
    with pytest.raises(UserError, match="did not acknowledge the records sent within 60 s"):
        publisher.close()
    assert publisher._producer.closed  # type: ignore[attr-defined]


class _NoPositionConsumer:
    """A reader whose `position` (and `stop`) never return: aiokafka waits for a position
    without a deadline, and the replay's stall check never ran."""

    last: _NoPositionConsumer | None = None

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        self.stops = 0
        self.client_closed = False
        self._client = self
        _NoPositionConsumer.last = self

    async def close(self) -> None:
        """Its client's close (`_client.close`), done when the stop is cut."""
        self.client_closed = True

    async def start(self) -> None:
        pass

    def assign(self, partitions: list[Any]) -> None:
        self.partitions = partitions

    async def end_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(partitions, 5)

    async def seek_to_beginning(self, *_partitions: object) -> None:
        pass

    async def getmany(self, *_partitions: object, timeout_ms: int) -> dict[Any, Any]:
        return {}

    async def position(self, _tp: object) -> int:
        await asyncio.Event().wait()
        return 0

    async def stop(self) -> None:
        self.stops += 1
        await asyncio.Event().wait()


def test_reading_a_result_topic_fails_clearly_when_kafka_gives_no_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(topic_read, "new_consumer", _NoPositionConsumer)
    monkeypatch.setattr(replay, "READ_STALL_TIMEOUT_S", 0.2)
    monkeypatch.setattr(replay, "READ_CLOSE_TIMEOUT_S", 0.2)
    settings = Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": "10.0.0.1:9092", "partitions": 1},  # type: ignore[arg-type]
    )
    started = time.monotonic()
    reading = asyncio.wait_for(replay.read_records(settings, "alerts"), 10)
    with pytest.raises(
        TopicUnreadable, match=r"did not give the reading position of .*alerts\[0\]"
    ):
        asyncio.run(reading)
    assert time.monotonic() - started < 5
    assert _NoPositionConsumer.last is not None
    assert _NoPositionConsumer.last.client_closed  # its stop cut short: closed all the same


@pytest.mark.parametrize("kind", ["closed", "silent", "kafka_head"])
def test_an_admin_client_that_cannot_start_leaves_no_socket_or_thread_behind(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python left each failed connect's socket to the collector (one ResourceWarning
    in a later test of every CI run) and a failed start's I/O thread running: a process
    waiting for Kafka leaked both at every try."""
    server = DeadServer(kind)
    unclosed: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda raised: unclosed.append(repr(raised)))
    threads = set(threading.enumerate())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            with pytest.raises(KafkaUnreachable, match="cannot reach Kafka"):
                kafka_admin.admin_client(
                    f"127.0.0.1:{server.port}", request_timeout_s=15, timeout_s=2.0
                )
            gc.collect()
    finally:
        server.close()
    assert unclosed == []
    assert [
        t.name for t in set(threading.enumerate()) - threads if t.name.startswith("kafka")
    ] == []


def test_an_admin_client_starts_with_a_bootstrap_server_that_never_answers_listed_first(
    kafka_bootstrap: str,
) -> None:
    """The probe gave the first server all of the wait: one that accepts and never answers
    (one broker of a cluster hung) kept every admin client from starting, and a process
    waiting for Kafka waited for ever; kafka-python, given both, picks one at random."""
    server = DeadServer("silent")
    try:
        for _ in range(3):
            admin = kafka_admin.admin_client(
                f"127.0.0.1:{server.port},{kafka_bootstrap}", request_timeout_s=15, timeout_s=4.0
            )
            try:
                assert admin.describe_cluster()["brokers"]
            finally:
                admin.close()
    finally:
        server.close()
