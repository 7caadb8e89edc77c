"""A ClickHouse server whose TLS handshake fails, said so at once.

A server URL (`https://`) whose certificate this client does not trust, or a server that
speaks plain HTTP given an https URL: the store's opening (`open_client`, what the sink,
`chainwatch sql`, `status` and `doctor` open) fails within the connect deadline with
`TLS handshake failed (<OpenSSL's reason>)`, and so do the CLI's line and doctor's check.
OpenSSL's `wrong version number` was all a plain HTTP server gave (the CLI's line kept
nothing of it: `cannot reach ClickHouse at ...; check CHAINWATCH_CLICKHOUSE__URL`), and
an untrusted certificate read `ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] ...`. Real
servers on loopback: `http.server` with a self-signed certificate made by the `openssl`
CLI (`secured_kafka.self_signed`), and without TLS (`loopback_http.serving`).
"""

from __future__ import annotations

import http.server
import time
from pathlib import Path

import pytest
from loopback_http import serving
from secured_kafka import self_signed

from chainwatch.cli_context import plain_store_error
from chainwatch.doctor import _clickhouse as doctor_clickhouse_check
from chainwatch.settings import Settings
from sinks.clickhouse.connection import StoreUnavailable, open_client

WITHIN_S = 5.0
"""The connect deadline (clickhouse-connect's `connect_timeout`), far below the request
timeouts (60 s a read, 10 s the probe's whole request)."""


class _Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # `/ping` answered as ClickHouse answers it
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"Ok.\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("tls", "reason"),
    [
        (True, "TLS handshake failed (certificate verify failed: self-signed certificate)"),
        (False, "TLS handshake failed (wrong version number: a plain HTTP server? then an "
                "http:// URL)"),
    ],
    ids=["untrusted-certificate", "plain-http"],
)  # fmt: skip
def test_a_failed_tls_handshake_is_said_as_one_within_the_connect_deadline(
    tmp_path: Path, tls: bool, reason: str
) -> None:
    certificate = self_signed(tmp_path) if tls else None
    with serving(_Ping, certificate=certificate) as port:
        url = f"https://chainwatch:s3cret@127.0.0.1:{port}/cw"
        settings = Settings(data_dir=tmp_path / "data", clickhouse={"url": url})
        began = time.monotonic()
        with pytest.raises(StoreUnavailable) as failed:
            open_client(settings)
        took = time.monotonic() - began
        check = doctor_clickhouse_check(settings)
    said = str(failed.value)
    where = f"cannot reach ClickHouse at https://chainwatch:***@127.0.0.1:{port}/cw"
    assert took < WITHIN_S, took
    assert said.startswith(f"{where}: ConnectError: {reason}; "), said  # the sink's log
    line = f"{where}: {reason}; check CHAINWATCH_CLICKHOUSE__URL"
    assert plain_store_error(said) == line  # the CLI's (`sql`, `status`)
    assert (check.ok, check.detail) == (False, line)
    assert "s3cret" not in said + check.detail
