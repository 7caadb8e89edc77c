"""`chainwatch config` prints no ClickHouse password; sink metrics bind loopback (issue 10)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chainwatch.process import serve_metrics
from chainwatch.settings import Settings, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://ops:s3cret@ch:8123/cw", "http://ops:***@ch:8123/cw"),
        ("https://ch:8443/cw?user=ops&password=s3cret", "https://ch:8443/cw?user=ops&password=***"),
        ("http://ch:8123/?PASSWORD=s3cret&x=1", "http://ch:8123/?PASSWORD=***&x=1"),
        ("http://ops:s3cret@ch/?password=s3cret#frag", "http://ops:***@ch/?password=***"),
        ("http://ops@ch:8123/cw", "http://ops@ch:8123/cw"),
    ],
)
def test_every_password_of_a_clickhouse_url_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def _config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`chainwatch config` with `env` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", "config"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "CHAINWATCH_DATA_DIR": str(tmp_path), **env},
    )  # fmt: skip


@pytest.mark.slow
def test_chainwatch_config_prints_no_password(tmp_path: Path) -> None:
    result = _config(
        tmp_path, CHAINWATCH_CLICKHOUSE__URL="http://ops:s3cret-1@ch:8123/cw?password=s3cret-2"
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert "http://ops:***@ch:8123/cw?password=***" in result.stdout


@pytest.mark.slow
def test_a_misspelt_variable_is_warned_of_by_name_never_its_value(tmp_path: Path) -> None:
    result = _config(tmp_path, CHAINWATCH_CLICKHOUSE__PASWORD="s3cret")
    assert result.returncode == 0, result.stderr
    assert "warning: CHAINWATCH_CLICKHOUSE__PASWORD is not a setting, ignored" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_a_sink_or_notifier_whose_kafka_went_away_answers_readyz_503(tmp_path: Path) -> None:
    """Once started they answered 200 through a whole broker outage."""
    import httpx
    from structlog.testing import capture_logs

    from chainwatch.kafka_watch import KafkaWatch
    from chainwatch.process import Startup

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    startup = Startup()
    server = serve_metrics(Settings(data_dir=tmp_path, metrics_port=port), startup)
    assert server is not None
    answers = [False, True]
    startup.kafka = KafkaWatch("k:9092", probe=lambda: answers.pop(0))
    url = f"http://127.0.0.1:{server.port}/readyz"
    try:
        assert httpx.get(url, timeout=5).status_code == 200
        with capture_logs() as logs:
            startup.kafka.check()
            down = httpx.get(url, timeout=5)
            startup.kafka.check()
        assert down.status_code == 503
        assert down.json()["reasons"][0].startswith("Kafka at k:9092 does not answer")
        assert httpx.get(url, timeout=5).status_code == 200
        assert [e["event"] for e in logs] == ["kafka_not_answering", "kafka_answering_again"]
    finally:
        server.shutdown()
        server.server_close()


def test_sink_metrics_listen_on_loopback_by_default(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve_metrics(Settings(data_dir=tmp_path, metrics_port=port))
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


def test_the_kafka_watch_checks_in_the_background_until_stopped() -> None:
    import threading
    import time

    from chainwatch.kafka_watch import KafkaWatch

    checked = threading.Event()

    def down() -> bool:
        checked.set()
        return False

    watch = KafkaWatch("k:9092", interval_s=0.01, probe=down).start()
    try:
        assert checked.wait(5)
        deadline = time.monotonic() + 5
        while watch.problem() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch.problem() is not None
    finally:
        watch.stop()
    assert watch._thread is not None
    watch._thread.join(5)
    assert not watch._thread.is_alive()


def test_down_s_counts_from_the_first_failed_check_not_from_when_it_gave_up() -> None:
    """An operator reads `down_s` as the outage's length: a broker that does not answer
    is found so only once the check's `timeout_s` is out, and that wait was down too
    (counted from the end of that check, a short outage said `down_s=0.0`)."""
    from dead_servers import DeadServer
    from structlog.testing import capture_logs

    from chainwatch.kafka_watch import KafkaWatch, answers

    silent = DeadServer("silent")
    try:
        address = f"127.0.0.1:{silent.port}"
        probes = [lambda: answers(address, 0.5), lambda: True]
        watch = KafkaWatch(address, timeout_s=0.5, probe=lambda: probes.pop(0)())
        with capture_logs() as logs:
            watch.check()  # the silent broker: not answering once 0.5 s are out
            watch.check()  # answering again at once
    finally:
        silent.close()
    assert [e["event"] for e in logs] == ["kafka_not_answering", "kafka_answering_again"]
    assert logs[1]["down_s"] >= 0.5


@pytest.mark.integration
def test_the_watch_asks_kafka_itself_and_a_silent_or_garbage_server_is_no_answer(
    kafka_bootstrap: str,
) -> None:
    import time

    from dead_servers import DeadServer

    from chainwatch.kafka_watch import answers

    assert answers(kafka_bootstrap, 5.0)
    assert answers(f"127.0.0.1:1,{kafka_bootstrap}", 5.0)  # any bootstrap broker will do
    for kind in ("closed", "silent", "garbage"):
        server = DeadServer(kind)
        try:
            began = time.monotonic()
            assert not answers(f"127.0.0.1:{server.port}", 0.5)
            assert time.monotonic() - began < 3
        finally:
            server.close()


def test_the_watch_reads_bootstrap_addresses_as_kafka_clients_do() -> None:
    from chainwatch.kafka_watch import _host_port

    assert _host_port("kafka") == ("kafka", 9092)  # a bare host: Kafka's default port
    assert _host_port("kafka-0.kafka:19092") == ("kafka-0.kafka", 19092)
    assert _host_port("[::1]:9093") == ("::1", 9093)
    assert _host_port("[::1]") == ("::1", 9092)


def test_the_watch_keeps_why_the_last_broker_reached_failed_tls() -> None:
    """What `kafka_start.started` reports once no broker answered: the TLS failure of the
    last broker reached, forgotten when a broker refuses the connection (it is down, not
    refusing TLS), kept through one that does not answer in time."""
    import ssl

    from dead_servers import DeadServer

    from chainwatch.kafka_watch import answers

    context = ssl.create_default_context()
    failures: list[ssl.SSLError] = []
    servers = {kind: DeadServer(kind) for kind in ("garbage", "silent", "closed")}
    try:

        def ask(kind: str) -> bool:
            address = f"127.0.0.1:{servers[kind].port}"
            return answers(address, 0.5, ssl_context=context, tls_errors=failures)

        assert not ask("garbage")  # not a TLS answer: OpenSSL's "wrong version number"
        assert [type(f) for f in failures] == [ssl.SSLError]
        assert not ask("silent")
        assert len(failures) == 1
        assert not ask("closed")
        assert failures == []
    finally:
        for server in servers.values():
            server.close()
