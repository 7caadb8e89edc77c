"""The clients over TLS: a broker of the module's own whose only listener is SASL_SSL
(a self-signed certificate made with the `openssl` CLI, given to the broker as PEM),
reached with `CHAINWATCH_KAFKA__SSL_CAFILE` naming that certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from secured_kafka import PASSWORD, publish_and_read, sasl, secured_broker, self_signed

from chainwatch.kafka_admin import AUTHENTICATION_FAILED
from chainwatch.kafka_watch import answers
from chainwatch.local_kafka import kafka_problem
from schemas.kafka_security import KafkaEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBE_S = 3.0
REFUSED_S = 1.0
"""The deadline of a probe expected to fail, which waits it out in full (no answer to
plain text; a refused login is said at the deadline): kept short (the settings allow 0.5)."""


@pytest.fixture(scope="module")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, spare_kafka_port: int
) -> Iterator[tuple[str, Path]]:
    """The broker's bootstrap, and the certificate (the CA file) its clients trust."""
    pem = tmp_path_factory.mktemp("tls-pem")
    cert, key = self_signed(pem)
    keystore = pem / "keystore.pem"  # Kafka's PEM key store: the key, then its certificate
    keystore.write_bytes(key.read_bytes() + cert.read_bytes())
    tls = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(cert),
    }
    data_dir = tmp_path_factory.mktemp("tls-broker")
    with secured_broker(data_dir, spare_kafka_port, "SASL_SSL", cafile=cert, more=tls) as bootstrap:
        yield bootstrap, cert


def test_the_probes_speak_tls_and_check_the_broker_s_certificate(
    tls_broker: tuple[str, Path],
) -> None:
    bootstrap, cert = tls_broker
    right = KafkaEndpoint(bootstrap, sasl("SASL_SSL", PASSWORD, cafile=cert))
    assert kafka_problem(right, PROBE_S) is None
    # the readiness watch's own ApiVersions probe: over TLS only
    assert answers(bootstrap, PROBE_S, ssl_context=right.security.ssl_context)
    assert not answers(bootstrap, REFUSED_S)
    # the system's CAs do not vouch for the broker's certificate: said as such
    untrusted = KafkaEndpoint(bootstrap, sasl("SASL_SSL", PASSWORD))
    assert kafka_problem(untrusted, PROBE_S) == (
        "TLS handshake failed (certificate verify failed: self-signed certificate)"
    )
    wrong = KafkaEndpoint(bootstrap, sasl("SASL_SSL", "not-it", cafile=cert))
    assert (kafka_problem(wrong, REFUSED_S) or "").startswith(f"{AUTHENTICATION_FAILED} (")


def test_the_gateway_s_publisher_and_the_sink_s_consumer_round_trip_over_tls(
    tls_broker: tuple[str, Path],
) -> None:
    bootstrap, cert = tls_broker
    publish_and_read(KafkaEndpoint(bootstrap, sasl("SASL_SSL", PASSWORD, cafile=cert)))
