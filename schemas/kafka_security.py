"""How every Kafka client of the project connects: the bootstrap servers and the security.

One place turns the security settings (`CHAINWATCH_KAFKA__SECURITY_PROTOCOL`,
`__SASL_*`, `__SSL_*`) into each client library's arguments: aiokafka's
(`aiokafka_kwargs`: the worker's own producer, the sink's, notifier's, gateway's,
importer's and replay's clients), kafka-python's (`kafka_python_kwargs`: the admin
clients, the probes, the simulator) and faust's (`faust_credentials`, its
`broker_credentials`). No client site builds security arguments itself: each is
given a `KafkaEndpoint` (bootstrap + security) and asks it. The factories are typed to
take an endpoint (`Kafka`), so mypy refuses a production site that hands one the bare
bootstrap string, which would connect in PLAINTEXT whatever the settings say (a command
written beside this change did, and a SASL cluster never answered it); at run time a
string is still taken as a PLAINTEXT endpoint (`endpoint`), for the tests' and benches'
brokers. What only names Kafka in an error (`kafka_call`, `start_producer`) takes either.

It lives in `schemas` because the streams and the sinks, which stand side by side,
both make clients.
"""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    """The security of the connections to Kafka (`KafkaSettings`' security fields)."""

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = field(default=None, repr=False)

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of an SSL or SASL_SSL connection (None otherwise): the server's
        certificate checked against `ssl_cafile` (the system's CAs when unset) and its
        host name, and the client's own certificate when `ssl_certfile` is given (its key
        decrypted with `ssl_key_password` when encrypted). One per security, so every
        client of a process (aiokafka's, kafka-python's, faust's) is given this one."""
        if not self.uses_ssl:
            return None
        return tls_context(
            self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, self.ssl_key_password
        )

    def _password(self) -> str | None:
        return None if self.sasl_password is None else self.sasl_password.get_secret_value()

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """What an aiokafka client (producer, consumer, `AIOKafkaClient`) is given."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_sasl:
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self._password(),
            }
        if self.uses_ssl:
            kwargs["ssl_context"] = self.ssl_context
        return kwargs

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """What a kafka-python client (admin, producer, consumer) is given: the same names."""
        return self.aiokafka_kwargs()

    def faust_credentials(self) -> Any:
        """faust's `broker_credentials` (None: PLAINTEXT); faust hands them to every
        consumer and producer it makes (the worker's transport's included)."""
        if self.uses_sasl:
            import faust

            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self._password(),
                ssl_context=self.ssl_context,  # None: SASL_PLAINTEXT
                mechanism=self.sasl_mechanism,
            )
        if self.uses_ssl:
            import faust

            return faust.SSLCredentials(self.ssl_context)
        return None


class TlsFilesRefused(ValueError):
    """The TLS files cannot make a context: what is wrong with which file, in one line."""


class _PassPhrase:
    """The pass phrase callback of `load_cert_chain`, which OpenSSL calls only for an
    encrypted key: it gives `ssl_key_password`, or, none set, refuses the key rather than
    let OpenSSL ask for it (its own prompt waited on a terminal, and without one the key
    failed as a broker that "does not answer"). `asked` tells a key that did not decrypt
    from a file that is no PEM key (OpenSSL says "PEM lib" of both)."""

    def __init__(self, password: SecretStr | None) -> None:
        self._password = password
        self.asked = False

    def __call__(self) -> str:
        self.asked = True
        if self._password is None:
            raise TlsFilesRefused("encrypted")
        return self._password.get_secret_value()


def tls_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason without its code and source line."""
    return re.sub(r"^\[\w+: \w+\] | \(_ssl\.c:\d+\)$", "", str(exc))[:200]


def tls_context(
    cafile: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    key_password: SecretStr | None = None,
) -> ssl.SSLContext:
    """A client TLS context from the PEM files, or `TlsFilesRefused` naming the file and
    what is wrong with it: an encrypted key without `key_password` or one it does not
    decrypt, a key that is not the certificate's, a file that is no PEM certificate
    (OpenSSL's reason). The password is in no message."""
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    except ssl.SSLError as exc:
        raise TlsFilesRefused(
            f"ssl_cafile {str(cafile)[:200]!r} holds no PEM CA certificate ({tls_reason(exc)})"
        ) from None
    if certfile is None:
        return context
    named = f"ssl_certfile {str(certfile)[:200]!r}"
    if keyfile is not None:
        named += f" with ssl_keyfile {str(keyfile)[:200]!r}"
    pass_phrase = _PassPhrase(key_password)
    try:
        context.load_cert_chain(
            str(certfile), str(keyfile) if keyfile is not None else None, pass_phrase
        )
    except TlsFilesRefused:
        raise TlsFilesRefused(
            f"{named}: the key is encrypted (a pass phrase): give the pass phrase in "
            "CHAINWATCH_KAFKA__SSL_KEY_PASSWORD (ssl_key_password), or the key unencrypted "
            "(openssl pkey -in KEY -out PLAIN)"
        ) from None
    except ValueError:
        if not pass_phrase.asked:
            raise
        # ssl's own refusal of a password past OpenSSL's buffer
        raise TlsFilesRefused(
            f"{named}: ssl_key_password is longer than the 1024 bytes OpenSSL takes"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason != "KEY_VALUES_MISMATCH" and pass_phrase.asked:
            # OpenSSL's reason ("PEM lib") says nothing more
            raise TlsFilesRefused(
                f"{named}: ssl_key_password does not decrypt the key (a wrong pass phrase; "
                "CHAINWATCH_KAFKA__SSL_KEY_PASSWORD)"
            ) from None
        why = (
            "the key is not the certificate's"
            if exc.reason == "KEY_VALUES_MISMATCH"
            else "not a PEM certificate and its PEM key"
        )
        raise TlsFilesRefused(f"{named}: {why} ({tls_reason(exc)})") from None
    return context


PLAINTEXT = KafkaSecurity()


@dataclass(frozen=True)
class KafkaEndpoint:
    """A Kafka cluster as a client connects to it: `bootstrap` (host:port[,...]) and its
    security. Shown as its bootstrap, which is what the error messages name."""

    bootstrap: str
    security: KafkaSecurity = PLAINTEXT

    def __str__(self) -> str:
        return self.bootstrap

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """bootstrap_servers and the security arguments of an aiokafka client."""
        return {"bootstrap_servers": self.bootstrap, **self.security.aiokafka_kwargs()}


Kafka = KafkaEndpoint
"""What a client factory takes (mypy holds production code to it; see the module's
docstring for the strings the tests pass)."""


def endpoint(kafka: KafkaEndpoint | str) -> KafkaEndpoint:
    """`kafka` as an endpoint (a bootstrap string: a PLAINTEXT one)."""
    return kafka if isinstance(kafka, KafkaEndpoint) else KafkaEndpoint(kafka)


def aiokafka_kwargs(kafka: Kafka) -> dict[str, Any]:
    """`bootstrap_servers` and the security arguments of an aiokafka client of `kafka`."""
    return endpoint(kafka).aiokafka_kwargs()
