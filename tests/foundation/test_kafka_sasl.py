"""Every Kafka client of the project talks to a cluster that requires SASL.

The session's secured broker (`secured_kafka`, conftest.py) has a SASL_PLAINTEXT client
listener with the PLAIN mechanism (users from a JAAS line), and no PLAINTEXT one: a client
that does not authenticate gets no metadata from it. Through it: the readiness probe
(`require_kafka`, `doctor`'s) with the right password and a wrong one (a refusal said as
such, within its deadline); a replay of the spec's worked examples, which takes the admin
clients (topic set-up, the run's deletion), the replay's producers and reader, and a
worker's faust app (a child process, given the settings through its environment) to the
expected alerts; `chainwatch sink --drain` and `notify --drain` (the sink's consumer, the
notifier's producer and readers) and `deliveries given-up` (its reader of the delivery
log), and the sink refusing a wrong password in one line; and the gateway's publisher to
the sink's consumer. No password reaches a log line, an error or the output.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from child_env import environ_without_settings
from samples import expected_alerts, worked_examples
from secured_kafka import (
    ADMIN_PASSWORD,
    PASSWORD,
    SecuredListeners,
    add_scram_user,
    publish_and_read,
    sasl,
)

from chainwatch.cli_context import require_kafka
from chainwatch.errors import UserError
from chainwatch.kafka_admin import AUTHENTICATION_FAILED, KafkaAuthenticationFailed, admin_client
from chainwatch.local_kafka import kafka_problem
from chainwatch.settings import Settings
from schemas.kafka_security import KafkaEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WRONG = "not-it-k1"
SCRAM_PASSWORD = "scram-s3cret"
PROBE_S = 3.0
REFUSED_S = 1.0
"""The deadline of a probe expected to fail, which waits it out in full (a refused login
is said at the deadline, as a broker that is down is): kept short (the settings allow 0.5)."""


@pytest.fixture
def sasl_broker(secured_kafka: SecuredListeners) -> str:
    """The secured broker's listener that wants SASL (PLAIN or SCRAM); its bootstrap."""
    return secured_kafka.sasl_plaintext


def _env(bootstrap: str, data_dir: Path, password: str) -> dict[str, str]:
    env = environ_without_settings()
    return env | {
        "CHAINWATCH_DATA_DIR": str(data_dir),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CHAINWATCH_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CHAINWATCH_KAFKA__SASL_MECHANISM": "PLAIN",
        "CHAINWATCH_KAFKA__SASL_USERNAME": "chainwatch",
        "CHAINWATCH_KAFKA__SASL_PASSWORD": password,
    }


def test_the_probe_passes_with_the_password_and_says_authentication_failed_without(
    sasl_broker: str, tmp_path: Path
) -> None:
    assert (
        kafka_problem(KafkaEndpoint(sasl_broker, sasl("SASL_PLAINTEXT", PASSWORD)), PROBE_S) is None
    )
    # without SASL the broker answers ApiVersions, then nothing: "does not answer"
    assert kafka_problem(sasl_broker, REFUSED_S) == "does not answer"

    kafka = {
        "bootstrap_servers": sasl_broker,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_username": "chainwatch",
        "sasl_password": WRONG,
    }
    began = time.monotonic()
    with pytest.raises(UserError) as refused:
        require_kafka(Settings(data_dir=tmp_path, kafka=kafka), timeout_s=REFUSED_S)
    assert time.monotonic() - began < REFUSED_S + 3  # its deadline, as for a broker that is down
    said = str(refused.value)
    assert said.startswith(f"Kafka at {sasl_broker}: {AUTHENTICATION_FAILED} (")
    assert "CHAINWATCH_KAFKA__SASL_PASSWORD" in said
    assert WRONG not in said

    # an admin client (every process's topic set-up) says it too, not "cannot reach"
    with pytest.raises(
        KafkaAuthenticationFailed, match=f"^Kafka at {sasl_broker}: {AUTHENTICATION_FAILED} "
    ):
        admin_client(
            KafkaEndpoint(sasl_broker, sasl("SASL_PLAINTEXT", WRONG)), request_timeout_s=REFUSED_S
        )

    doctor = subprocess.run(
        [sys.executable, "-m", "chainwatch", "doctor"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env=_env(sasl_broker, tmp_path / "doctor", WRONG)
        | {"CHAINWATCH_KAFKA__PROBE_TIMEOUT_S": str(REFUSED_S)},
    )  # fmt: skip
    kafka_line = next(line for line in doctor.stdout.splitlines() if "kafka" in line)
    assert AUTHENTICATION_FAILED in kafka_line, doctor.stdout
    assert WRONG not in doctor.stdout + doctor.stderr


def test_a_replay_through_a_worker_on_a_sasl_cluster_gives_the_expected_alerts(
    sasl_broker: str, tmp_path: Path
) -> None:
    scenario = worked_examples(tmp_path / "march.ndjson")
    expected = {alert["alert_id"] for alert in expected_alerts()}
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "replay", str(scenario),
         "--until", "2027-03-31T00:00:00Z", "--sink", "--run-id", "sasl-1"],
        capture_output=True, text=True, timeout=280, check=False, cwd=ROOT,
        env=_env(sasl_broker, data, PASSWORD),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    alerts = {orjson.loads(line)["alert_id"] for line in result.stdout.splitlines()}
    assert expected <= alerts
    assert "stored as run sasl-1: " in result.stderr
    logs = list((data / "logs").glob("*.log"))
    assert any("worker" in log.name for log in logs), logs  # a worker ran, and logged
    for text in [result.stdout, result.stderr, *(log.read_text() for log in logs)]:
        assert PASSWORD not in text


def test_the_sink_and_the_notifier_drain_and_a_wrong_password_stops_the_sink_saying_why(
    sasl_broker: str, tmp_path: Path
) -> None:
    """Their processes as deployed: topic set-up, the partition check, the sink's consumer
    and store identities; the notifier's producer, consumer and warm-up reader."""
    subscriptions = tmp_path / "subscriptions.yaml"
    subscriptions.write_text(
        "endpoints:\n  - name: ops\n    url: https://hooks.example.com/chainwatch\n"
        "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
    )
    env = _env(sasl_broker, tmp_path / "data", PASSWORD)
    env["CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS"] = str(subscriptions)
    for command, done in (("sink", "sink: 0 rows"), ("notify", "notify: 0 alert records")):
        ran = subprocess.run(
            [sys.executable, "-m", "chainwatch", command, "--drain"],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env=env,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert done in ran.stdout + ran.stderr
        assert PASSWORD not in ran.stdout + ran.stderr
    # the notifier's delivery log, read back by `deliveries` (its partition counts and a
    # reader of no group) on the topics `notify` made
    listed = subprocess.run(
        [sys.executable, "-m", "chainwatch", "deliveries", "given-up", "--since", "1h"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "given-up: 0 given up since 1h" in listed.stderr
    assert PASSWORD not in listed.stdout + listed.stderr

    refused = subprocess.run(
        [sys.executable, "-m", "chainwatch", "sink", "--drain"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env=_env(sasl_broker, tmp_path / "refused", WRONG)
        | {"CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S": str(REFUSED_S)},
    )  # fmt: skip
    assert refused.returncode != 0
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: Kafka at {sasl_broker}: {AUTHENTICATION_FAILED} ("), error
    assert WRONG not in refused.stdout + refused.stderr


def test_a_scram_sha_512_user_connects_and_a_wrong_scram_password_is_refused(
    sasl_broker: str,
) -> None:
    """SCRAM, the mechanism of MSK's and many clusters' users, was passed to the client
    libraries untried: both connect with it (kafka-python: the probe's admin client;
    aiokafka: the gateway's publisher and the sink's consumer), and a wrong SCRAM
    password is said as a refused login."""
    admin = KafkaEndpoint(sasl_broker, sasl("SASL_PLAINTEXT", ADMIN_PASSWORD, user="admin"))
    add_scram_user(admin, "scram-user", SCRAM_PASSWORD)
    scram = KafkaEndpoint(
        sasl_broker,
        sasl("SASL_PLAINTEXT", SCRAM_PASSWORD, user="scram-user", mechanism="SCRAM-SHA-512"),
    )
    assert kafka_problem(scram, PROBE_S) is None
    publish_and_read(scram)
    wrong = KafkaEndpoint(
        sasl_broker, sasl("SASL_PLAINTEXT", WRONG, user="scram-user", mechanism="SCRAM-SHA-512")
    )
    problem = kafka_problem(wrong, PROBE_S)
    assert problem is not None
    assert problem.startswith(AUTHENTICATION_FAILED), problem
    assert WRONG not in problem


def test_the_gateway_s_publisher_and_the_sink_s_consumer_round_trip(sasl_broker: str) -> None:
    publish_and_read(KafkaEndpoint(sasl_broker, sasl("SASL_PLAINTEXT", PASSWORD)))
