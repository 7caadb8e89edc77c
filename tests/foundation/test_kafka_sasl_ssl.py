"""The clients over TLS: the session's secured broker's SASL_SSL listener (`secured_kafka`,
conftest.py; a self-signed certificate made with the `openssl` CLI, given to the broker
as PEM), reached with `CHAINWATCH_KAFKA__SSL_CAFILE` naming that certificate."""

from __future__ import annotations

from pathlib import Path

import pytest
from secured_kafka import PASSWORD, SecuredListeners, publish_and_read, sasl

from chainwatch.kafka_admin import AUTHENTICATION_FAILED
from chainwatch.kafka_watch import answers
from chainwatch.local_kafka import kafka_problem
from schemas.kafka_security import KafkaEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBE_S = 3.0
REFUSED_S = 1.0
"""The deadline of a probe expected to fail, which waits it out in full (no answer to
plain text; a refused login is said at the deadline): kept short (the settings allow 0.5)."""


@pytest.fixture
def tls_broker(secured_kafka: SecuredListeners) -> tuple[str, Path]:
    """The SASL_SSL listener's bootstrap, and the certificate (the CA file) its clients trust."""
    return secured_kafka.sasl_ssl, secured_kafka.sasl_ssl_cafile


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
