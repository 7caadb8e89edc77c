"""A broker whose client listeners are all secured (SASL_PLAINTEXT and SASL_SSL, the PLAIN
mechanism, users from a JAAS line; SSL requiring a client certificate, its certificates
from a CA made here), and a round trip through it: the gateway's publisher writes, the
sink's consumer reads (test_kafka_sasl*.py, test_kafka_mtls.py, test_gateway_sasl.py).
One such broker serves a session (`secured_listeners`, conftest.py's `secured_kafka`):
each listener is reached on a port of its own, none of them answers a client that does
not speak its protocol, and the tests on it add users and topics of their own only."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from chainwatch.kafka_admin import admin_client, close_admin, create_missing_topics
from chainwatch.local_kafka import LocalBroker
from chainwatch.settings import Settings
from schemas.kafka_security import KafkaEndpoint, KafkaSecurity, SaslMechanism, SecurityProtocol
from sinks.consumer import new_consumer
from streams.ingest.publisher import PublisherConfig, TransactionalPublisher
from streams.ingest.records import OutRecord

USER = "chainwatch"
PASSWORD = "s3cret-k1"
ADMIN_PASSWORD = "admin-secret"
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
JAAS = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    f'username="admin" password="{ADMIN_PASSWORD}" user_admin="{ADMIN_PASSWORD}" '
    f'user_{USER}="{PASSWORD}";'
)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key in `folder` (the `openssl` CLI)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def sasl(
    protocol: SecurityProtocol,
    password: str,
    *,
    user: str = USER,
    cafile: Path | None = None,
    mechanism: SaslMechanism = "PLAIN",
) -> KafkaSecurity:
    return KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=user,
        sasl_password=SecretStr(password),
        ssl_cafile=cafile,
    )


def certificate_authority(folder: Path, name: str) -> tuple[Path, Path]:
    """A CA of a test's own (`name`.pem, `name`-key.pem in `folder`; the `openssl` CLI)."""
    cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def issued(folder: Path, ca: tuple[Path, Path], name: str) -> tuple[Path, Path]:
    """A certificate for `name` signed by `ca` (its certificate, its key), valid for
    127.0.0.1 (a broker's or a client's), and its key: `name`.pem, `name`-key.pem."""
    cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-CA", str(ca[0]), "-CAkey", str(ca[1]),
         "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


KEY_PASSWORD = "k3y-pass-mtls"
"""The password of the mTLS client's encrypted key (`Pki.encrypted_key`)."""


@dataclass(frozen=True)
class Pki:
    """The mTLS listener's CA and its clients' certificates."""

    ca: Path
    client: tuple[Path, Path]  # certificate, key: issued by `ca`
    stranger: tuple[Path, Path]  # issued by another CA
    encrypted_key: Path  # client's key, encrypted with KEY_PASSWORD


@dataclass(frozen=True)
class SecuredListeners:
    """The bootstraps of the secured broker's three client listeners, and their PKI."""

    sasl_plaintext: str
    sasl_ssl: str
    sasl_ssl_cafile: Path  # the SASL_SSL listener's self-signed certificate
    mtls: str  # SSL, a client certificate issued by `pki.ca` required
    pki: Pki


def _pem_keystore(folder: Path, name: str, cert: Path, key: Path) -> Path:
    """Kafka's PEM key store: the key, then its certificate."""
    keystore = folder / f"{name}-keystore.pem"
    keystore.write_bytes(key.read_bytes() + cert.read_bytes())
    return keystore


@contextmanager
def secured_listeners(folder: Path, port: int) -> Iterator[SecuredListeners]:
    """A broker with three client listeners: SASL_PLAINTEXT on `port`, SASL_SSL (a
    self-signed certificate) on `port` + 1, SSL requiring a client certificate (a CA of
    its own) on `port` + 2; its controller on `port` + 3. The certificates are made once,
    in `folder` (the `openssl` CLI), and given to the broker as PEM, per listener."""
    pem = folder / "pem"
    pem.mkdir()
    tls_cert, tls_key = self_signed(pem)
    ca = certificate_authority(pem, "ca")
    broker_cert, broker_key = issued(pem, ca, "broker")
    client = issued(pem, ca, "client")
    encrypted_key = pem / "client-key-encrypted.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(client[1]), "-aes256",
         "-passout", f"pass:{KEY_PASSWORD}", "-out", str(encrypted_key)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pki = Pki(ca[0], client, issued(pem, certificate_authority(pem, "other"), "x"), encrypted_key)
    ports = {"SASL_PLAINTEXT": port, "SASL_SSL": port + 1, "SSL": port + 2}
    controller = port + 3
    listeners = ",".join(f"{name}://127.0.0.1:{p}" for name, p in ports.items())
    overrides = {
        "listeners": f"{listeners},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": listeners,
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,"
        + ",".join(f"{name}:{name}" for name in ports),
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        # SCRAM users are added once it runs (`add_scram_user`); the broker itself logs in
        # with PLAIN
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        **{
            f"listener.name.{name}.{mechanism}.sasl.jaas.config": jaas
            for name in ("sasl_plaintext", "sasl_ssl")
            for mechanism, jaas in (("plain", JAAS), ("scram-sha-512", SCRAM_JAAS))
        },
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(
            _pem_keystore(pem, "sasl-ssl", tls_cert, tls_key)
        ),
        "listener.name.sasl_ssl.ssl.truststore.type": "PEM",
        "listener.name.sasl_ssl.ssl.truststore.location": str(tls_cert),
        "listener.name.ssl.ssl.keystore.type": "PEM",
        "listener.name.ssl.ssl.keystore.location": str(
            _pem_keystore(pem, "mtls", broker_cert, broker_key)
        ),
        "listener.name.ssl.ssl.truststore.type": "PEM",
        "listener.name.ssl.ssl.truststore.location": str(ca[0]),  # the clients' CA
        "listener.name.ssl.ssl.client.auth": "required",
    }
    settings = Settings(
        data_dir=folder / "broker", kafka={"local_port": port, "local_controller_port": controller}
    )
    broker = LocalBroker(
        settings, overrides, security=sasl("SASL_PLAINTEXT", ADMIN_PASSWORD, user="admin")
    )
    try:
        broker.start()
        yield SecuredListeners(
            sasl_plaintext=f"127.0.0.1:{ports['SASL_PLAINTEXT']}",
            sasl_ssl=f"127.0.0.1:{ports['SASL_SSL']}",
            sasl_ssl_cafile=tls_cert,
            mtls=f"127.0.0.1:{ports['SSL']}",
            pki=pki,
        )
    finally:
        broker.stop()  # also one whose start failed: it may run, not answering our probe


def add_scram_user(kafka: KafkaEndpoint, user: str, password: str) -> None:
    """A SCRAM-SHA-512 user on the broker (AlterUserScramCredentials, as `admin` through
    PLAIN): KRaft keeps SCRAM credentials in its metadata, no JAAS line lists them."""
    from kafka.admin import UserScramCredentialUpsertion

    admin = admin_client(kafka, request_timeout_s=15)
    try:
        failed = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, "SCRAM-SHA-512", password)]
        )
    finally:
        close_admin(admin)
    assert not any(failed.values()), failed


def publish_and_read(kafka: KafkaEndpoint, records: int = 3) -> None:
    """The gateway's publisher writes `records` to a new topic, the sink's consumer reads
    them back, each within its deadline."""
    topic = f"t{uuid.uuid4().hex[:8]}-scans"
    create_missing_topics(kafka, {topic: {}}, request_timeout_s=15, partitions=1)
    sent = [OutRecord(topic, f"k{i}".encode(), f"v{i}".encode()) for i in range(records)]

    async def round_trip() -> list[tuple[bytes | None, bytes | None]]:
        publisher = TransactionalPublisher(PublisherConfig(kafka, f"{topic}-gateway"))
        try:
            assert await publisher.ready()
            await publisher.publish(sent)
        finally:
            await publisher.stop()
        consumer = new_consumer(kafka, f"{topic}-sink")
        await consumer.start()
        try:
            consumer.subscribe([topic])
            read: list[tuple[bytes | None, bytes | None]] = []
            async with asyncio.timeout(30):
                while len(read) < len(sent):
                    batch = await consumer.getmany(timeout_ms=500)
                    read += [(r.key, r.value) for rs in batch.values() for r in rs]
            return read
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == [(r.key, r.value) for r in sent]
