"""The clients over mutual TLS: the session's secured broker's SSL listener (`secured_kafka`,
conftest.py), which requires a client certificate (`ssl.client.auth=required`), its
certificate and the clients' issued by a CA of its own (the `openssl` CLI), all given to
the broker as PEM. The clients are configured as a deployment configures them, through the settings
(`CHAINWATCH_KAFKA__SECURITY_PROTOCOL=SSL`, `__SSL_CAFILE`, `__SSL_CERTFILE`,
`__SSL_KEYFILE`): the readiness probe (`require_kafka`, `doctor`'s) passes with the
client certificate and says "TLS handshake failed (...)" in one line within its deadline
without one, or with one of another CA; `chainwatch doctor` run with those variables
passes, says the handshake failed without a certificate, and stops at the start, in one
line, given a key of another certificate; it passes with an encrypted key and its
password (`__SSL_KEY_PASSWORD`) and stops at the start, in one line, given a wrong one;
`chainwatch sink --drain` says the handshake failed at once, not after its request timeout;
records go through aiokafka (the gateway's publisher to the sink's consumer) and
kafka-python (the simulator's producer, the admin clients) and are read back; a replay
through a worker (faust's `SSLCredentials`) gives the worked examples' alerts, its key
the encrypted one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from child_env import environ_without_settings
from samples import expected_alerts, worked_examples
from secured_kafka import KEY_PASSWORD, Pki, SecuredListeners, publish_and_read

from chainwatch.cli_context import require_kafka
from chainwatch.doctor import _kafka as doctor_kafka_check
from chainwatch.errors import UserError
from chainwatch.kafka_watch import KafkaWatch
from chainwatch.settings import Settings
from chainwatch.simulator_outputs.kafka_out import KafkaPublisher
from simulator.records import SimRecord
from sinks.topic_read import read_to_end

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROBE_S = 3.0
TLS_HINT = "CHAINWATCH_KAFKA__SSL_CERTFILE"


@pytest.fixture
def mtls_broker(secured_kafka: SecuredListeners) -> tuple[str, Pki]:
    """The mTLS listener's bootstrap and the certificates of its clients."""
    return secured_kafka.mtls, secured_kafka.pki


def _settings(
    tmp_path: Path, bootstrap: str, pki: Pki, client: tuple[Path, Path] | None
) -> Settings:
    """The settings a deployment gives (what CHAINWATCH_KAFKA__* would set)."""
    kafka: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SSL",
        "ssl_cafile": pki.ca,
        "probe_timeout_s": PROBE_S,
        "replication_factor": 1,
        "partitions": 1,
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}-",
    }
    if client is not None:
        kafka |= {"ssl_certfile": client[0], "ssl_keyfile": client[1]}
    return Settings(data_dir=tmp_path, kafka=kafka)


def test_the_probe_passes_with_the_client_certificate_and_says_tls_failed_without(
    mtls_broker: tuple[str, Pki], tmp_path: Path
) -> None:
    bootstrap, pki = mtls_broker
    good = _settings(tmp_path, bootstrap, pki, pki.client)
    require_kafka(good)
    assert doctor_kafka_check(good).ok
    for client in (None, pki.stranger):  # no certificate; one the broker's CA did not issue
        cfg = _settings(tmp_path, bootstrap, pki, client)
        began = time.monotonic()
        with pytest.raises(UserError) as refused:
            require_kafka(cfg)
        assert time.monotonic() - began < PROBE_S + 3  # its deadline (and the bound's 2 s)
        said = str(refused.value)
        assert said.startswith(f"Kafka at {bootstrap}: TLS handshake failed ("), said
        assert "\n" not in said, said
        assert TLS_HINT in said, said
        check = doctor_kafka_check(cfg)
        assert not check.ok, check
        assert check.detail.startswith("TLS handshake failed ("), check


def test_a_running_processs_readiness_says_tls_failed_not_does_not_answer(
    mtls_broker: tuple[str, Pki], tmp_path: Path
) -> None:
    """A certificate that expires or is replaced while a worker runs: its /readyz named a
    broker that does not answer, which sent the on-call to the network, not the PKI."""
    bootstrap, pki = mtls_broker
    for client, said in ((pki.client, None), (None, "bad certificate"), (pki.stranger, "unknown")):
        kafka = _settings(tmp_path, bootstrap, pki, client).kafka
        watch = KafkaWatch(
            kafka.bootstrap, timeout_s=PROBE_S, ssl_context=kafka.security.ssl_context
        )
        watch.check()
        problem = watch.problem()
        if said is None:
            assert problem is None
        else:
            assert problem is not None
            assert problem.startswith(
                f"Kafka at {bootstrap} answers, but: TLS handshake failed ("
            ), problem
            assert said in problem, problem


def test_records_round_trip_through_aiokafka_and_kafka_python_clients(
    mtls_broker: tuple[str, Pki], tmp_path: Path
) -> None:
    bootstrap, pki = mtls_broker
    cfg = _settings(tmp_path, bootstrap, pki, pki.client)
    # aiokafka: the gateway's publisher writes, the sink's consumer reads (the topic made
    # by kafka-python's admin client)
    publish_and_read(cfg.kafka.endpoint)
    # kafka-python: the simulator's producer (its topics made by the admin client)
    publisher = KafkaPublisher(cfg)
    sent = [SimRecord("scans", f"o{i}", f'{{"n": {i}}}', at_ms=0) for i in range(3)]
    try:
        for record in sent:
            publisher.send(record)
    finally:
        publisher.close()
    assert publisher.failed == 0
    read = asyncio.run(
        read_to_end(cfg.kafka.endpoint, publisher.names("scans"), 1, stall_s=20, close_s=5)
    )
    assert [(r.key, r.value) for r in read] == [(r.key_bytes(), r.value_bytes()) for r in sent]


def _env(
    bootstrap: str,
    data_dir: Path,
    ca: Path,
    client: tuple[Path, Path] | None,
    key_password: str | None = None,
) -> Any:
    """A deployment's environment: the settings from it alone."""
    env = environ_without_settings()
    env |= {
        "CHAINWATCH_DATA_DIR": str(data_dir),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CHAINWATCH_KAFKA__SECURITY_PROTOCOL": "SSL",
        "CHAINWATCH_KAFKA__SSL_CAFILE": str(ca),
        "CHAINWATCH_KAFKA__PROBE_TIMEOUT_S": str(PROBE_S),
    }
    if client is not None:
        env |= {
            "CHAINWATCH_KAFKA__SSL_CERTFILE": str(client[0]),
            "CHAINWATCH_KAFKA__SSL_KEYFILE": str(client[1]),
        }
    if key_password is not None:
        env["CHAINWATCH_KAFKA__SSL_KEY_PASSWORD"] = key_password
    return env


def _doctor(
    bootstrap: str,
    data_dir: Path,
    ca: Path,
    client: tuple[Path, Path] | None,
    key_password: str | None = None,
) -> Any:
    """`chainwatch doctor` as deployed: the settings from the environment alone."""
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", "doctor"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env=_env(bootstrap, data_dir, ca, client, key_password), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_chainwatch_doctor_from_the_environment_passes_with_the_client_certificate(
    mtls_broker: tuple[str, Pki], tmp_path: Path
) -> None:
    """The command a deployment runs first: the `CHAINWATCH_KAFKA__SSL_*` variables reach
    every client; without a certificate its kafka line says the handshake failed; a key
    of another certificate stops it at the start, in one line naming the files."""
    bootstrap, pki = mtls_broker
    good = _doctor(bootstrap, tmp_path / "good", pki.ca, pki.client)
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"kafka        answering on {bootstrap}" in good.stdout, good.stdout

    bare = _doctor(bootstrap, tmp_path / "bare", pki.ca, None)
    assert bare.returncode == 1, bare.stdout + bare.stderr
    kafka_line = next(line for line in bare.stdout.splitlines() if " kafka " in line)
    assert "FAIL" in kafka_line, bare.stdout
    assert "TLS handshake failed (" in kafka_line, bare.stdout
    assert TLS_HINT in kafka_line, kafka_line
    assert "Traceback" not in bare.stdout + bare.stderr

    mismatched = (pki.client[0], pki.stranger[1])
    wrong = _doctor(bootstrap, tmp_path / "wrong", pki.ca, mismatched)
    assert wrong.returncode != 0, wrong.stdout + wrong.stderr
    assert wrong.stdout == "", wrong.stdout
    said = wrong.stderr.strip()
    assert "\n" not in said, said
    assert "ssl_keyfile" in said, said
    assert "the key is not the certificate's" in said, said


def test_a_sinks_start_says_the_tls_handshake_failed_at_once_not_after_its_request_timeout(
    mtls_broker: tuple[str, Pki], tmp_path: Path
) -> None:
    """`chainwatch sink --drain` without a client certificate, or with one of another CA:
    its start (the topics' set-up, kafka-python's admin client) tried the handshake again
    until `kafka.request_timeout_s` ran out (15 s by default) and only then said it
    failed, a refused certificate that no retry changes; now it says so at once."""
    bootstrap, pki = mtls_broker
    request_s = 30.0  # what the start waited before: far above the bound below
    for name, client in (("bare", None), ("stranger", pki.stranger)):
        env = _env(bootstrap, tmp_path / name, pki.ca, client)
        env["CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S"] = str(request_s)
        began = time.monotonic()
        sink = subprocess.run(
            [sys.executable, "-m", "chainwatch", "sink", "--drain"],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
            env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        took = time.monotonic() - began
        assert sink.returncode == 1, sink.stdout + sink.stderr
        said = sink.stderr.strip().splitlines()[-1]
        assert said.startswith(f"error: Kafka at {bootstrap}: TLS handshake failed ("), said
        assert TLS_HINT in said, said
        assert "Traceback" not in sink.stderr, sink.stderr
        assert took < PROBE_S + 10, (name, took)  # the interpreter's start, on a busy machine


def test_chainwatch_doctor_passes_with_an_encrypted_client_key_and_its_password(
    mtls_broker: tuple[str, Pki], tmp_path: Path
) -> None:
    """A plant's PKI hands out encrypted keys: given CHAINWATCH_KAFKA__SSL_KEY_PASSWORD
    the client presents its certificate (the broker requires it); a wrong password stops
    the command at its start, in one line naming the key, without the password."""
    bootstrap, pki = mtls_broker
    client = (pki.client[0], pki.encrypted_key)
    good = _doctor(bootstrap, tmp_path / "good", pki.ca, client, KEY_PASSWORD)
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"kafka        answering on {bootstrap}" in good.stdout, good.stdout
    assert KEY_PASSWORD not in good.stdout + good.stderr

    wrong = _doctor(bootstrap, tmp_path / "wrong", pki.ca, client, "not-" + KEY_PASSWORD)
    assert wrong.returncode != 0, wrong.stdout + wrong.stderr
    assert wrong.stdout == "", wrong.stdout
    said = wrong.stderr.strip()
    assert "\n" not in said, said
    assert f"ssl_keyfile '{pki.encrypted_key}'" in said, said
    assert "ssl_key_password does not decrypt the key" in said, said
    assert KEY_PASSWORD not in said, said


def test_a_replay_through_a_worker_over_mutual_tls_gives_the_expected_alerts(
    mtls_broker: tuple[str, Pki], tmp_path: Path
) -> None:
    """The worker's faust app (its `SSLCredentials`, its transport's own consumers and
    producers) and the replay's clients, each presenting the client certificate; its key
    the encrypted one, whose password the replay hands its worker in the environment."""
    bootstrap, pki = mtls_broker
    client = (pki.client[0], pki.encrypted_key)
    scenario = worked_examples(tmp_path / "march.ndjson")
    expected = {alert["alert_id"] for alert in expected_alerts()}
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "replay", str(scenario),
         "--until", "2027-03-31T00:00:00Z"],
        capture_output=True, text=True, timeout=280, check=False, cwd=ROOT,
        env=_env(bootstrap, tmp_path / "data", pki.ca, client, KEY_PASSWORD),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    alerts = {orjson.loads(line)["alert_id"] for line in result.stdout.splitlines()}
    assert expected <= alerts
