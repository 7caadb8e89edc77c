"""The Kafka security settings: refused at the start when they cannot work, turned into
each client library's arguments in one place, their TLS context built from the files,
and the password shown nowhere (test_kafka_sasl.py connects through a SASL broker)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from child_env import environ_without_settings
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import SecretStr, ValidationError
from secured_kafka import self_signed

from chainwatch.kafka_watch import answers
from chainwatch.settings import KafkaSettings, Settings
from schemas.kafka_security import KafkaSecurity
from sinks.consumer import new_consumer
from streams.app import create_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pa55-k1-unit"
SASL = {
    "bootstrap_servers": "kafka-1:9093",
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "chainwatch",
    "sasl_password": PASSWORD,
}


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the `openssl` CLI)."""
    cert, key = self_signed(tmp_path_factory.mktemp("pem"))
    return {"cert": cert, "key": key}


@pytest.mark.parametrize(
    ("kafka", "said"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"},
         "the local broker is PLAINTEXT"),
        ({"sasl_username": "u"}, "the local broker is PLAINTEXT"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "SASL_PLAINTEXT",
          "sasl_username": "u"}, "needs sasl_username and sasl_password"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "SASL_SSL",
          "sasl_password": "p"}, "needs sasl_username and sasl_password"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "SSL",
          "ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile '/nonexistent/ca.pem' is not a"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "SSL",
          "ssl_keyfile": "/etc/hostname"}, "ssl_keyfile is given without ssl_certfile"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "SSL",
          "ssl_key_password": "pw"}, "ssl_key_password is given without ssl_certfile"),
        ({"ssl_key_password": "pw"}, "the local broker is PLAINTEXT"),
        # the TLS files (or the SASL user) of a protocol without TLS (without SASL) were
        # ignored: deploy/compose.yaml's mutual TLS lines alone left PLAINTEXT, and every
        # process waited for a TLS broker that "does not answer"
        ({"bootstrap_servers": "k:9092", "ssl_certfile": "/etc/hostname",
          "ssl_keyfile": "/etc/hostname", "ssl_key_password": "pw"},
         "ssl_certfile, ssl_keyfile, ssl_key_password are given with security_protocol "
         "PLAINTEXT, which does not use TLS: set CHAINWATCH_KAFKA__SECURITY_PROTOCOL to SSL "
         "or SASL_SSL"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "SASL_PLAINTEXT",
          "sasl_username": "u", "sasl_password": "p", "ssl_cafile": "/etc/hostname"},
         "ssl_cafile is given with security_protocol SASL_PLAINTEXT, which does not use TLS"),
        ({"bootstrap_servers": "k:9092", "sasl_username": "u", "sasl_password": "p"},
         "sasl_username, sasl_password are given with security_protocol PLAINTEXT, which "
         "does not use SASL: set CHAINWATCH_KAFKA__SECURITY_PROTOCOL to SASL_SSL or "
         "SASL_PLAINTEXT"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "SSL", "sasl_password": "p"},
         "sasl_password is given with security_protocol SSL, which does not use SASL"),
        ({"bootstrap_servers": "k:9092", "security_protocol": "TLS"}, "'PLAINTEXT', 'SSL', "),
        ({"bootstrap_servers": "k:9092", "sasl_mechanism": "GSSAPI"}, "'SCRAM-SHA-256'"),
    ],
)  # fmt: skip
def test_security_that_cannot_work_is_refused_at_the_start_in_one_line(
    kafka: dict[str, str], said: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        KafkaSettings(**kafka)
    message = refused.value.errors()[0]["msg"]  # what `chainwatch` prints
    assert said in message
    assert "\n" not in message


def test_a_path_that_is_no_readable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"ssl_certfile .* is not a readable file"):
        KafkaSettings(bootstrap_servers="k:9092", security_protocol="SSL", ssl_certfile=tmp_path)


@pytest.fixture(scope="module")
def wrong_pem(tmp_path_factory: pytest.TempPathFactory, pem: dict[str, Path]) -> dict[str, Path]:
    """Files a deployment may mount by mistake: another certificate's key, the key
    encrypted with a pass phrase."""
    folder = tmp_path_factory.mktemp("wrong-pem")
    _, other_key = self_signed(folder)
    encrypted = folder / "encrypted-key.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(pem["key"]), "-aes256", "-passout", "pass:pw",
         "-out", str(encrypted)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return {"other_key": other_key, "encrypted": encrypted}


@pytest.mark.parametrize(
    ("files", "said"),
    [
        (("cert", "cert", "other_key"), "ssl_keyfile '{other_key}': the key is not the "
         "certificate's (key values mismatch)"),
        (("cert", "cert", "encrypted"), "ssl_keyfile '{encrypted}': the key is encrypted "
         "(a pass phrase): give the pass phrase in CHAINWATCH_KAFKA__SSL_KEY_PASSWORD"),
        (("cert", "cert", "cert"), "'{cert}': not a PEM certificate and its PEM key"),
        (("cert", "key", "key"), "'{key}': not a PEM certificate and its PEM key"),
        (("key", None, None), "ssl_cafile '{key}' holds no PEM CA certificate (no "
         "certificate or crl found)"),
    ],
)  # fmt: skip
def test_tls_files_that_make_no_context_are_refused_at_the_start_naming_the_file(
    pem: dict[str, Path],
    wrong_pem: dict[str, Path],
    files: tuple[str, str | None, str | None],
    said: str,
) -> None:
    """They were read only by the first client, whose error every probe took for a broker
    that does not answer ("no answer from ...; check ... BOOTSTRAP_SERVERS"), and an
    encrypted key had OpenSSL ask for its pass phrase on the terminal, each client again."""
    paths = pem | wrong_pem
    cafile, certfile, keyfile = (None if f is None else paths[f] for f in files)
    with pytest.raises(ValidationError) as refused:
        KafkaSettings(
            bootstrap_servers="k:9092",
            security_protocol="SSL",
            ssl_cafile=cafile,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
    message = refused.value.errors()[0]["msg"]  # what `chainwatch` prints
    assert said.format(**{k: str(v) for k, v in paths.items()}) in message, message
    assert "\n" not in message


KEY_PASSWORD = "k3y-pass-unit"


@pytest.fixture(scope="module")
def encrypted_key(tmp_path_factory: pytest.TempPathFactory, pem: dict[str, Path]) -> Path:
    """`pem`'s key encrypted with KEY_PASSWORD, as a plant's PKI hands keys out."""
    encrypted = tmp_path_factory.mktemp("encrypted-pem") / "key.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(pem["key"]), "-aes256",
         "-passout", f"pass:{KEY_PASSWORD}", "-out", str(encrypted)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return encrypted


def _mtls(pem: dict[str, Path], key: Path, **more: object) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="127.0.0.1:9093",
        security_protocol="SSL",
        ssl_cafile=pem["cert"],
        ssl_certfile=pem["cert"],
        ssl_keyfile=key,
        **more,
    )


def test_an_encrypted_key_with_its_password_makes_the_one_context_of_every_client(
    pem: dict[str, Path], encrypted_key: Path, tls_broker_double: int
) -> None:
    """Kafka's own clients take `ssl.key.password`; an encrypted key was refused."""
    kafka = _mtls(pem, encrypted_key, ssl_key_password=KEY_PASSWORD)
    context = kafka.security.ssl_context
    assert context is not None
    # the key decrypted is the one the certificate's: the double requires it
    assert answers(f"127.0.0.1:{tls_broker_double}", 5, ssl_context=context)
    # aiokafka's clients, kafka-python's and faust's are all given that one context
    assert kafka.endpoint.aiokafka_kwargs()["ssl_context"] is context
    assert kafka.security.kafka_python_kwargs()["ssl_context"] is context
    faust_auth = credentials_to_aiokafka_auth(kafka.security.faust_credentials())
    assert faust_auth["ssl_context"] is context


@pytest.mark.parametrize(
    ("password", "said"),
    [
        ("wrong-one", ": ssl_key_password does not decrypt the key (a wrong pass phrase; "
         "CHAINWATCH_KAFKA__SSL_KEY_PASSWORD)"),
        ("x" * 1100, ": ssl_key_password is longer than the 1024 bytes OpenSSL takes"),
    ],
)  # fmt: skip
def test_a_wrong_key_password_is_refused_at_the_start_in_one_line_naming_the_key(
    pem: dict[str, Path], encrypted_key: Path, password: str, said: str
) -> None:
    """Never asked for on a terminal, nor left to the first client's handshake."""
    with pytest.raises(ValidationError) as refused:
        _mtls(pem, encrypted_key, ssl_key_password=password)
    message = refused.value.errors()[0]["msg"]  # what `chainwatch` prints
    assert f"ssl_keyfile '{encrypted_key}'{said}" in message, message
    assert "\n" not in message
    assert password not in message
    assert KEY_PASSWORD not in message


def test_the_key_password_is_in_no_settings_dump_repr_or_error(
    tmp_path: Path, pem: dict[str, Path], encrypted_key: Path
) -> None:
    kafka = {
        "bootstrap_servers": "127.0.0.1:9093",
        "security_protocol": "SSL",
        "ssl_cafile": pem["cert"],
        "ssl_certfile": pem["cert"],
        "ssl_keyfile": encrypted_key,
        "ssl_key_password": KEY_PASSWORD,
    }
    settings = Settings(data_dir=tmp_path, kafka=kafka)
    assert settings.kafka.ssl_key_password == SecretStr(KEY_PASSWORD)
    for text in _shown(settings):
        assert KEY_PASSWORD not in text
    assert settings.redacted()["kafka"]["ssl_key_password"] == "**********"
    # a child process (a replay's worker) gets it through its environment, as every secret
    assert settings.to_env()["CHAINWATCH_KAFKA__SSL_KEY_PASSWORD"] == KEY_PASSWORD


@pytest.mark.slow
def test_chainwatch_config_prints_no_key_password(
    tmp_path: Path, pem: dict[str, Path], encrypted_key: Path
) -> None:
    env = environ_without_settings()
    env |= {
        "CHAINWATCH_DATA_DIR": str(tmp_path),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9093",
        "CHAINWATCH_KAFKA__SECURITY_PROTOCOL": "SSL",
        "CHAINWATCH_KAFKA__SSL_CAFILE": str(pem["cert"]),
        "CHAINWATCH_KAFKA__SSL_CERTFILE": str(pem["cert"]),
        "CHAINWATCH_KAFKA__SSL_KEYFILE": str(encrypted_key),
        "CHAINWATCH_KAFKA__SSL_KEY_PASSWORD": KEY_PASSWORD,
    }
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "config"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert KEY_PASSWORD not in result.stdout + result.stderr
    assert re.search(r"ssl_key_password\W+\*{10}", result.stdout), result.stdout


def test_every_library_gets_the_same_security_from_the_one_module(pem: dict[str, Path]) -> None:
    kafka = KafkaSettings(
        **{**SASL, "security_protocol": "SASL_SSL"},
        ssl_cafile=pem["cert"],
        ssl_certfile=pem["cert"],
        ssl_keyfile=pem["key"],
    )
    security = kafka.security
    aiokafka = kafka.endpoint.aiokafka_kwargs()
    assert aiokafka == {
        "bootstrap_servers": "kafka-1:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "chainwatch",
        "sasl_plain_password": PASSWORD,
        "ssl_context": security.ssl_context,
    }
    # kafka-python takes the same names, all of them its clients' options
    python_kwargs = security.kafka_python_kwargs()
    assert python_kwargs == {k: v for k, v in aiokafka.items() if k != "bootstrap_servers"}
    for client in (KafkaAdminClient, KafkaProducer, KafkaConsumer):
        assert set(python_kwargs) <= set(client.DEFAULT_CONFIG), client
    # faust turns its credentials into the same aiokafka arguments
    assert credentials_to_aiokafka_auth(security.faust_credentials()) == python_kwargs

    async def clients() -> None:  # aiokafka's constructors take them (they need a loop)
        made = [new_consumer(kafka.endpoint, "g"), AIOKafkaConsumer(**aiokafka)]
        for consumer in made:
            assert consumer._client._security_protocol == "SASL_SSL"
            assert consumer._client._sasl_plain_password == PASSWORD
            assert consumer._client._ssl_context is security.ssl_context
            await consumer.stop()  # never started: nothing to wait for
        producer = AIOKafkaProducer(**aiokafka)
        assert producer.client._sasl_mechanism == "SCRAM-SHA-512"
        await producer.stop()

    asyncio.run(clients())


def test_the_worker_s_faust_app_is_given_the_credentials(tmp_path: Path) -> None:
    endpoint = KafkaSettings(**SASL).endpoint
    app = create_app("k1-app", bootstrap=endpoint, partitions=1, data_dir=tmp_path)
    credentials = app.conf.broker_credentials
    given = {k: v for k, v in credentials_to_aiokafka_auth(credentials).items() if v is not None}
    assert given == endpoint.security.aiokafka_kwargs()  # (ssl_context None: no TLS)
    assert [str(url) for url in app.conf.broker] == ["kafka://kafka-1:9093"]
    plain = create_app("k1-plain", bootstrap="k:9092", partitions=1, data_dir=tmp_path)
    assert plain.conf.broker_credentials is None


def test_plaintext_and_ssl_only_give_no_sasl(pem: dict[str, Path]) -> None:
    assert KafkaSecurity().aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity().ssl_context is None
    assert KafkaSecurity().faust_credentials() is None
    tls = KafkaSecurity(protocol="SSL", ssl_cafile=pem["cert"])
    assert set(tls.aiokafka_kwargs()) == {"security_protocol", "ssl_context"}
    assert credentials_to_aiokafka_auth(tls.faust_credentials()) == tls.aiokafka_kwargs()


@pytest.fixture
def tls_broker_double(pem: dict[str, Path]) -> Iterator[int]:
    """A TLS listener that wants a client certificate signed by `pem`'s and answers one
    Kafka-framed response with correlation id 1 (what `answers` asks for); its port."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pem["cert"], pem["key"])
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(cafile=pem["cert"])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            with server.wrap_socket(raw, server_side=True) as conn:
                conn.recv(1024)
                conn.sendall(struct.pack(">ii", 4, 1))
        except OSError:
            pass  # the test's client gave up: its assertion says why

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


def test_the_ssl_context_from_the_files_verifies_the_broker_and_presents_the_client_cert(
    pem: dict[str, Path], tls_broker_double: int
) -> None:
    security = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{tls_broker_double}",
        security_protocol="SSL",
        ssl_cafile=pem["cert"],
        ssl_certfile=pem["cert"],
        ssl_keyfile=pem["key"],
    ).security
    context = security.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]
    # the readiness watch's own probe speaks TLS with it (and the broker took our certificate)
    assert answers(f"127.0.0.1:{tls_broker_double}", 5, ssl_context=context)


def test_a_tls_probe_without_the_broker_s_ca_does_not_pass(
    pem: dict[str, Path], tls_broker_double: int
) -> None:
    context = KafkaSecurity(protocol="SSL").ssl_context  # the system's CAs: not ours
    assert not answers(f"127.0.0.1:{tls_broker_double}", 5, ssl_context=context)


def _shown(settings: Settings) -> list[str]:
    """Every way the settings are shown or logged: no secret may be in any."""
    return [
        json.dumps(settings.redacted()),
        repr(settings),
        str(settings.kafka),
        repr(settings.kafka.security),
        repr(settings.kafka.endpoint),
        str(settings.kafka.endpoint),
        repr(settings.kafka.security.faust_credentials()),
    ]


def test_the_password_is_in_no_settings_dump_repr_or_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, kafka=SASL)
    assert settings.kafka.sasl_password == SecretStr(PASSWORD)
    for text in _shown(settings):
        assert PASSWORD not in text
    assert settings.redacted()["kafka"]["sasl_password"] == "**********"
    # a child process (a replay's worker) gets it through its environment, as every secret
    assert settings.to_env()["CHAINWATCH_KAFKA__SASL_PASSWORD"] == PASSWORD
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path, kafka={**SASL, "ssl_certfile": "/nonexistent"})
    assert PASSWORD not in refused.value.errors()[0]["msg"]


@pytest.mark.slow
def test_chainwatch_config_prints_no_kafka_password(tmp_path: Path) -> None:
    env = environ_without_settings()
    env |= {"CHAINWATCH_DATA_DIR": str(tmp_path)}
    env |= {f"CHAINWATCH_KAFKA__{name.upper()}": value for name, value in SASL.items()}
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "config"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert re.search(r"sasl_password\W+\*{10}", result.stdout), result.stdout


def test_no_client_site_builds_its_own_connection_arguments() -> None:
    """Every aiokafka client is given `aiokafka_kwargs` (bootstrap and security), every
    kafka-python one goes through `kafka_start.started`: no other `bootstrap_servers=`."""
    found = subprocess.run(
        ["git", "grep", "-n", "-E", r"bootstrap_servers=|sasl_plain|security_protocol=",
         "--", "chainwatch", "streams", "sinks", "simulator", "dashboards"],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=30,
    ).stdout.splitlines()  # fmt: skip
    assert [line.split(":")[0] for line in found] == ["chainwatch/kafka_start.py"], found
