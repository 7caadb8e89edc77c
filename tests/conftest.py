"""Suite-wide fixtures: one real Kafka broker per test session, unique names per test.

The broker is the project's own (`chainwatch.local_kafka`), on its own port and
data dir so a developer's demo broker is left alone. Set
`CHAINWATCH_TEST_BOOTSTRAP` to run the integration tests against another broker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from ast_serialised import serialise_ast_parsing
from logging_state import logging_restored
from suite_ports import (
    DEFAULT_BASE,
    SECOND,
    SECURED,
    ephemeral_range,
    refusal,
    session_ports,
)

from chainwatch.kafka_connect_close import close_failed_connects
from chainwatch.settings import Settings

if TYPE_CHECKING:
    from secured_kafka import SecuredListeners

    from chainwatch.local_kafka import BrokerStatus

ROOT = Path(__file__).resolve().parent.parent
# pytest-xdist runs one session per worker process (gw0, gw1, ...): each gets its own
# broker on its own ports (a block of suite_ports.py's, all below the ephemeral range) and
# data dir, so no two sessions share topics or groups.
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_BASE_PORT = int(os.environ.get("CHAINWATCH_TEST_KAFKA_PORT", str(DEFAULT_BASE)))
_PORTS = session_ports(_BASE_PORT, _XDIST_INDEX)
TEST_BROKER_DIR = (
    ROOT / ".chainwatch" / ("test-broker" if _XDIST_INDEX == 0 else f"test-broker-{_XDIST_INDEX}")
)
_BROKER_USED: list[str] = []


serialise_ast_parsing()  # CPython 3.11.7's gh-106905: see ast_serialised.py
# the kafka-python clients tests make themselves close a failed connect's socket, as ours
# do (chainwatch.kafka_start applies it): else a later test got its ResourceWarning
close_failed_connects()


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the session as Ctrl-C does, so the fixtures tear down.

    A CI timeout or `kill` sends SIGTERM, which by default ends Python at once: the
    brokers, workers and gateways the fixtures started kept running after the
    suite, holding their ports for the next run. As a KeyboardInterrupt pytest
    stops the test and runs every finalizer (xdist's workers too, when the
    signal reaches their process group).

    A base port that would put a session's broker ports into the kernel's ephemeral
    range is refused here, before any test runs (suite_ports.py says why).
    """
    sessions = os.environ.get("PYTEST_XDIST_WORKER_COUNT") or len(
        getattr(config.option, "tx", None) or ()
    )
    refused = refusal(_BASE_PORT, max(int(sessions), 1), ephemeral_range())
    if refused:
        raise pytest.UsageError(refused)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)


def _interrupted(signum: int, frame: object) -> None:
    del frame
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}: stopping, fixtures tear down")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reaches the broker (any fixture chain to `kafka_bootstrap`) is integration.

    So `pytest -m "not integration"` never starts a broker, whatever a module forgot to mark.
    """
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
    _side_by_side(items, "filled_store")


def _side_by_side(items: list[pytest.Item], fixture: str) -> None:
    """The tests using a session fixture of `fixture` move to just after the first of them.

    xdist hands each session runs of adjacent tests: the dashboard and status tests
    of the one filled store were a collection apart, each side filled its own (a
    replay and a sink, ~10 s). Otherwise the order is the collection's."""
    using = [item for item in items if fixture in getattr(item, "fixturenames", ())]
    if not using:
        return
    first = items.index(using[0])
    rest = [item for item in items if fixture not in getattr(item, "fixturenames", ())]
    items[:] = rest[:first] + using + rest[first:]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which real broker the integration tests talked to."""
    for line in _BROKER_USED:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Start (or reuse) the suite's broker once; stop it at the end if we started it."""
    external = os.environ.get("CHAINWATCH_TEST_BOOTSTRAP")
    if external:
        _BROKER_USED.append(f"integration tests ran against the Kafka broker at {external}")
        yield external
        return
    from chainwatch.local_kafka import LocalBroker

    settings = Settings(
        data_dir=TEST_BROKER_DIR,
        kafka={"local_port": _PORTS[0], "local_controller_port": _PORTS[1]},
    )
    broker = LocalBroker(settings)
    current = broker.status()
    already = current.running
    if current.pid is None:
        # Every test makes its own topics, ~1,000-2,000 partition directories a run, and
        # a broker keeps a file open per directory: kept from run to run, they reached
        # the open-file limit after a dozen runs and the broker died mid-suite. What a
        # run left is of no use to the next, so a broker this session starts starts empty.
        shutil.rmtree(broker.home / "data", ignore_errors=True)
    status = broker.start(progress=print)
    _BROKER_USED.append(
        f"integration tests ran against a real Apache Kafka broker on {status.bootstrap} "
        f"(pid {status.pid}), {'reused' if already else 'started by this test session'}"
    )
    yield status.bootstrap
    if not already:
        broker.stop()


@pytest.fixture(scope="session")
def _second_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerStatus]:
    """The session's second plain broker, started once: the frozen-broker tests freeze it
    (three modules, a test each) and test_no_topic_creation needs one that creates topics
    as Kafka's default does; each started a broker of its own, ~8-14 s apiece. Topics are
    created on it by no client of ours (test_no_topic_creation proves it) and the frozen
    tests make theirs before they freeze it, so the setting changes nothing for them."""
    from chainwatch.local_kafka import LocalBroker

    port = _PORTS[SECOND]
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("second-broker"),
        kafka={"local_port": port, "local_controller_port": port + 1},
    )
    broker = LocalBroker(settings, overrides={"auto.create.topics.enable": "true"})
    status = broker.start()
    try:
        yield status
    finally:
        if status.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(status.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
        broker.stop()


SECOND_READY_S = 30.0
"""How long a test waits for the second broker to answer before it starts: one frozen by
the test before may be fencing itself on its thaw (its heartbeats missed)."""


@pytest.fixture
def freezable_broker(_second_broker: BrokerStatus) -> Iterator[BrokerStatus]:
    """A broker of the session's own, which its tests may freeze (SIGSTOP; each thaws it
    before it ends): the session's broker is every test's (frozen_broker.py). Each test
    gets it thawed and answering metadata, whatever the test before it did to it."""
    from chainwatch.local_kafka import metadata_ok

    status = _second_broker
    assert status.pid is not None
    os.kill(status.pid, signal.SIGCONT)
    deadline = time.monotonic() + SECOND_READY_S
    while not metadata_ok(status.bootstrap, timeout_s=2.0):
        assert time.monotonic() < deadline, (
            f"the second broker did not answer within {SECOND_READY_S:g} s"
        )
    try:
        yield status
    finally:
        os.kill(status.pid, signal.SIGCONT)  # a test that failed frozen leaves it thawed


@pytest.fixture
def creating_broker(freezable_broker: BrokerStatus) -> str:
    """A broker that creates any topic a Metadata request allows it to, as Kafka's default
    (`auto.create.topics.enable=true`): the session's second broker, thawed and answering."""
    return freezable_broker.bootstrap


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredListeners]:
    """The session's secured broker: SASL_PLAINTEXT, SASL_SSL and mutual-TLS listeners
    (secured_kafka.py), its certificates made once. Four modules started a broker each
    (and made their certificates), ~8-12 s apiece; their tests add only users and topics
    of their own to it, so they share one."""
    from secured_kafka import secured_listeners

    with secured_listeners(tmp_path_factory.mktemp("secured-kafka"), _PORTS[SECURED]) as kafka:
        yield kafka


@pytest.fixture(scope="session")
def own_broker_dir() -> Path:
    """The data dir of this session's own broker (`chainwatch kafka ...` commands take it)."""
    return TEST_BROKER_DIR


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test running a CLI command in-process leaves no logging set-up to later tests
    (a handler on its closed capture stream): see logging_state.py."""
    with logging_restored():
        yield


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names no other test uses (topics, groups, app ids): `unique('sink')`."""
    run = uuid.uuid4().hex[:8]
    return lambda base: f"t{run}-{base}"


@pytest.fixture
def settings_factory(tmp_path: Path, kafka_bootstrap: str) -> Callable[..., Settings]:
    """Settings for one test: its own data dir, topic prefix and app id, on the suite broker."""
    prefix = f"t{uuid.uuid4().hex[:8]}."

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "topic_prefix": prefix,
                "partitions": 4,
            },
            "engine": {"app_id": f"cw-{prefix.rstrip('.')}"},
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def filled_store(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Settings:
    """A store the real pipeline filled once per session (see tests/pipeline_store.py)."""
    from pipeline_store import fill_store

    return fill_store(tmp_path_factory.mktemp("filled"), kafka_bootstrap)
