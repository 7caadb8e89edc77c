"""The HTTP around the operations: paths that are not the gateway's, probes, encodings.

Each case was found by a hostile-input probe of a running gateway; the answer
is always a 4xx in the documented error shape (docs/ingest.md), never a
redirect, a 5xx or silence.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest
from gateway_harness import (
    Harness,
    metric,
    protocol_refusals,
    read_response,
    token_of,
    wait_until_in_flight,
)
from samples import fresh_scan as scan

REQUESTS = "chainwatch_gateway_requests_total"
ERRORS = "chainwatch_gateway_errors_total"

pytestmark = pytest.mark.integration


def _documented_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize("path", ["/v1/scans/", "/v1/partial/scans/", "/v1/nowhere/"])
def test_a_trailing_slash_is_not_found_not_a_redirect(gateway: Harness, path: str) -> None:
    response = gateway.post(path, [scan()], headers={"Host": "attacker.example"})
    assert "location" not in response.headers
    _documented_error(response, 404, "not_found")


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_may_ask_with_head(gateway: Harness, path: str) -> None:
    get = gateway.client.get(path)
    head = gateway.client.head(path)
    assert head.status_code == get.status_code == 200, head.text
    assert head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert head.headers["x-request-id"]
    refused = gateway.client.post(path)
    _documented_error(refused, 405, "method_not_allowed")
    assert refused.headers["allow"] == "GET"  # the documented method, not HEAD


def _counted(gateway: Harness, endpoint: str, error: str) -> float:
    wanted = f'chainwatch_gateway_errors_total{{endpoint="{endpoint}",error="{error}"}} '
    for line in gateway.client.get("/metrics").text.splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_refused_customer_delete_is_logged_and_counted(
    gateway: Harness, capfd: pytest.CaptureFixture[str]
) -> None:
    crm = {"Authorization": "Bearer secret-token-of-crm"}
    unit = {"Authorization": "Bearer secret-token-of-unit-dye"}
    cases = [
        ("/v1/customers/" + "c" * 65, crm, 422, "bad_parameter"),
        ("/v1/customers/C-1", {}, 401, "unauthorized"),
        ("/v1/customers/C-1", unit, 403, "forbidden"),
    ]
    before = {error: _counted(gateway, "customers-delete", error) for *_, error in cases}
    capfd.readouterr()
    for path, headers, status, error in cases:
        _documented_error(gateway.client.delete(path, headers=headers), status, error)
    captured = capfd.readouterr()
    lines = (captured.out + captured.err).splitlines()
    logged = [line for line in lines if "] tombstone " in line]
    for (*_, status, error), line in zip(cases, logged, strict=True):
        assert f"status={status}" in line, line
        assert f"error={error}" in line, line
    for *_, error in cases:
        assert _counted(gateway, "customers-delete", error) == before[error] + 1, error


@pytest.mark.parametrize(
    ("content_type", "encoding", "complaint"),
    [
        ("application/json", "gzip", "unsupported Content-Encoding 'gzip'"),
        ("application/json", "br", "unsupported Content-Encoding 'br'"),
        ("application/json", "identity, deflate", "Content-Encoding 'identity, deflate'"),
        ("application/json; charset=utf-16", None, "unsupported charset 'utf-16'"),
        ('application/x-ndjson; charset="ISO-8859-1"', None, "unsupported charset 'iso-8859-1'"),
    ],
)
def test_a_body_the_gateway_would_misread_is_415(
    gateway: Harness, content_type: str, encoding: str | None, complaint: str
) -> None:
    import gzip
    import json

    record = scan()
    body = json.dumps(record).encode()
    if encoding == "gzip":
        body = gzip.compress(body)
    headers = {"Content-Encoding": encoding} if encoding else {}
    response = gateway.post("/v1/scans", content=body, content_type=content_type, headers=headers)
    answer = _documented_error(response, 415, "unsupported_media_type")
    assert complaint in answer["detail"]
    published = {json.loads(v)["event_id"] for _, v in gateway.read_all("scans") if v}
    assert record["event_id"] not in published


@pytest.mark.parametrize(
    ("content_type", "encoding", "complaint"),
    [
        (b"application/json\xa0", None, "unsupported content type 'application/json\\xa0'"),
        (b"application/x-ndjson\x85", None, "unsupported content type 'application/x-ndjson"),
        (b"application/json; charset=utf-8\xa0", None, "unsupported charset 'utf-8\\xa0'"),
        (b"application/json; \xa0charset=utf-16", None, "parameter '\\xa0charset'"),
        (b"application/json", b"identity\xa0", "unsupported Content-Encoding 'identity\\xa0'"),
    ],
)
def test_other_whitespace_around_a_media_type_is_415(
    gateway: Harness, content_type: bytes, encoding: bytes | None, complaint: str
) -> None:
    """HTTP's whitespace is space and tab; `str.strip()` also cut a no-break space or a
    NEL (bytes 0xA0, 0x85, which the HTTP parser passes, read latin-1), so these were
    read as JSON, NDJSON, UTF-8 or `identity`."""
    record = scan()
    headers = {"Authorization": f"Bearer {token_of('admin')}", "Content-Type": content_type}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    response = gateway.client.post("/v1/scans", content=json.dumps(record), headers=headers)
    answer = _documented_error(response, 415, "unsupported_media_type")
    assert complaint in answer["detail"]
    published = {json.loads(v)["event_id"] for _, v in gateway.read_all("scans") if v}
    assert record["event_id"] not in published


LONG = "x" * 7_000
"""A header value of 7 KB (the HTTP parser takes headers up to 16 KB in all)."""


@pytest.mark.parametrize(
    ("content_type", "encoding", "complaint"),
    [
        (f"application/{LONG}", None, "unsupported content type 'application/xxx"),
        ("application/json", f"gzip{LONG}", "unsupported Content-Encoding 'gzipxxx"),
        (f"application/json; charset={LONG}", None, "unsupported charset 'xxx"),
        (f"application/json; {LONG}@=1", None, "unsupported content type parameter 'xxx"),
    ],
)
def test_a_415_repeats_at_most_the_start_of_a_long_header(
    gateway: Harness, content_type: str, encoding: str | None, complaint: str
) -> None:
    """Each 415 echoed the header's value whole: a 7 KB header, a 7 KB answer."""
    headers = {"Content-Encoding": encoding} if encoding else {}
    response = gateway.post("/v1/scans", [scan()], content_type=content_type, headers=headers)
    detail = _documented_error(response, 415, "unsupported_media_type")["detail"]
    assert detail.startswith(complaint), detail
    assert "characters)" in detail, detail  # says how long the value it cut is
    assert len(response.content) < 500, detail


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("application/json; charset=UTF-8", "identity"),
        ('application/json;charset="utf8"', None),
        ("application/json ;\tcharset = utf-8;", "identity ,\tidentity"),
    ],
)
def test_utf8_and_identity_are_read_as_before(
    gateway: Harness, content_type: str, encoding: str | None
) -> None:
    headers = {"Content-Encoding": encoding} if encoding else {}
    response = gateway.post("/v1/scans", [scan()], content_type=content_type, headers=headers)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("value", ["\x0ctrue", "true\xa0", " true", "\ttrue", "true\n"])
def test_partial_with_whitespace_around_it_is_a_bad_parameter(gateway: Harness, value: str) -> None:
    """`str.strip()` read `?partial=%0Ctrue` (or a no-break space, a space ...) as true."""
    record = scan()
    response = gateway.post("/v1/scans", [record], params={"partial": value})
    answer = _documented_error(response, 422, "bad_parameter")
    assert answer["loc"] == "partial"
    published = {json.loads(v)["event_id"] for _, v in gateway.read_all("scans") if v}
    assert record["event_id"] not in published
    assert gateway.post("/v1/scans", [scan()], params={"partial": "TRUE"}).status_code == 202


def _address(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


def _raw_exchange(base_url: str, data: bytes, until: bytes | None = None) -> bytes:
    """What the gateway answers to `data` on one connection, read until it closes (or
    until the answer ends with `until`, on a connection kept alive)."""
    with socket.create_connection(_address(base_url), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if until is not None and answer.endswith(until):
                break
    return answer


_NOT_HTTP = {
    "negative_length": b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    "two_lengths": (
        b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "length_and_chunked": (
        b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "control_character": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\x7fb\r\n\r\n",
    "tls_hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(_NOT_HTTP))
def test_a_request_the_http_parser_refuses_is_a_json_400(gateway: Harness, name: str) -> None:
    """uvicorn answered these in plain text ("Invalid HTTP request received."), with no
    request id: a client could not tell the gateway's refusal from a proxy's."""
    counted = protocol_refusals(gateway.base_url, 400, "bad_request")
    answer = _raw_exchange(gateway.base_url, _NOT_HTTP[name])
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert status_line.startswith("HTTP/1.1 400 "), answer
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["error"] == "bad_request"
    assert error["request_id"] == headers["x-request-id"]
    assert error["detail"].startswith("the request is not valid HTTP/1.1: "), error
    assert protocol_refusals(gateway.base_url, 400, "bad_request") == counted + 1


def test_a_refused_request_after_a_pipelined_one_does_not_cut_its_answer(
    gateway: Harness,
) -> None:
    """The answer owed to the first request comes whole, then the connection closes (the
    parser's 400 written at once would have gone out before it, and the close cut it)."""
    answer = _raw_exchange(
        gateway.base_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + _NOT_HTTP["tls_hello"]
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert answer.endswith(b'{"status":"ok"}'), answer


def _upgrade_request(path: str, body: bytes, method: str = "POST") -> bytes:
    """What `curl --http2` sends to an http:// URL: HTTP/1.1 asking for an h2c upgrade."""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token_of('admin')}\r\nContent-Type: application/json\r\n"
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        f"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_an_upgrade_with_a_body_is_a_clear_400_not_an_empty_request(gateway: Harness) -> None:
    """The parser gave the body to the upgrade: a POST of scans was answered 422 `empty`
    ("the request holds no items")."""
    record = scan()
    answer = _raw_exchange(
        gateway.base_url, _upgrade_request("/v1/scans", json.dumps([record]).encode())
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    error = json.loads(body)
    assert error["error"] == "bad_request"
    assert "Upgrade" in error["detail"]
    published = [json.loads(v) for _, v in gateway.read_all("scans") if v]
    assert record["event_id"] not in {p.get("event_id") for p in published}


def test_an_upgrade_without_a_body_is_ignored(gateway: Harness) -> None:
    request = _upgrade_request("/healthz", b"", method="GET")
    answer = _raw_exchange(gateway.base_url, request, until=b'{"status":"ok"}')
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def _chunked_post_head(extra_headers: str = "") -> bytes:
    """A post of scans whose chunked body has begun with one good chunk (`[{`)."""
    return (
        f"POST /v1/scans HTTP/1.1\r\nHost: x\r\n{extra_headers}"
        f"Authorization: Bearer {token_of('admin')}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\n[{\r\n"
    ).encode()


def test_a_chunked_body_the_parser_refuses_is_a_json_400_at_once(gateway: Harness) -> None:
    """The parser failed inside the body of the request being served: it was taken for an
    earlier request still owed an answer, so no 400 was written and the app waited for the
    rest of the body, answering 408 `body_timeout` after `body_timeout_s`."""
    counted = protocol_refusals(gateway.base_url, 400, "bad_request")
    with socket.create_connection(_address(gateway.base_url), timeout=1) as sock:
        sock.sendall(_chunked_post_head())
        sock.sendall(b"zz\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # a timeout (no answer within 1 s) fails the test
            answer += chunk
    head_part, _, body = answer.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 400 "), answer
    error = json.loads(body)
    assert error["error"] == "bad_request"
    assert error["detail"].startswith("the request is not valid HTTP/1.1: "), error
    assert protocol_refusals(gateway.base_url, 400, "bad_request") == counted + 1


def test_a_chunked_body_the_parser_refuses_is_counted_once_under_its_own_request_id(
    gateway: Harness,
) -> None:
    """The route, seeing its body cut, also logged and counted `client_disconnected`
    (status 400) under the request's id, while the answer named a new one."""

    def counts() -> tuple[float, ...]:
        return (
            protocol_refusals(gateway.base_url, 400, "bad_request"),
            metric(gateway.base_url, REQUESTS, endpoint="scans", status="400"),
            metric(gateway.base_url, ERRORS, endpoint="scans", error="client_disconnected"),
            metric(gateway.base_url, ERRORS, endpoint="scans", error="bad_request"),
        )

    before = counts()
    with socket.create_connection(_address(gateway.base_url), timeout=5) as sock:
        sock.sendall(_chunked_post_head("X-Request-ID: broken-chunk-7\r\n"))
        wait_until_in_flight(gateway.base_url, 1)  # the route reads the body
        sock.sendall(b"zz\r\n")
        status, headers, body = read_response(sock, timeout_s=5)
    wait_until_in_flight(gateway.base_url, 0)  # the route is done (and counted, if it does)
    assert status == 400
    assert headers["x-request-id"] == "broken-chunk-7"
    assert json.loads(body)["request_id"] == "broken-chunk-7"
    assert counts() == (before[0] + 1, *before[1:])


def test_a_broken_chunked_body_behind_a_pipelined_request_is_answered_after_it(
    gateway: Harness,
) -> None:
    """The first request's answer comes whole, then the 400 of the one whose body broke."""
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n[{\r\nzz\r\n"
    )
    answer = _raw_exchange(gateway.base_url, request)
    first, _, second = answer.partition(b'{"status":"ok"}')
    assert first.startswith(b"HTTP/1.1 200 "), answer
    head, _, body = second.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert json.loads(body)["error"] == "bad_request"


def _read_answers(base_url: str, request: bytes, count: int) -> bytes:
    """What the gateway answers to `request` on one connection, read until `count`
    answers of /healthz came (a timeout, or a close before, fails)."""
    with socket.create_connection(_address(base_url), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while answer.count(b'{"status":"ok"}') < count:
            chunk = sock.recv(65536)
            assert chunk, answer[-200:]  # closed with an answer missing
            answer += chunk
    return answer


@pytest.mark.parametrize("upgrades", [1, 600])
def test_a_request_pipelined_after_an_ignored_upgrade_is_answered(
    gateway: Harness, upgrades: int
) -> None:
    """uvicorn threw away what followed the point of the upgrade: the second request was
    silently dropped, and the connection closed at the keep-alive timeout. 600 of them in
    one packet: what follows each is parsed in a loop, not a recursion that overflows."""
    plain = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    request = _upgrade_request("/healthz", b"", method="GET") * upgrades + plain
    answer = _read_answers(gateway.base_url, request, upgrades + 1)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert answer.count(b"HTTP/1.1 200 ") == upgrades + 1


def test_an_ignored_upgrade_is_logged_once_per_connection_without_advice_to_install(
    gateway: Harness, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn logged two warnings per such request, the second telling the operator to
    install a WebSocket library (the gateway has no WebSocket): `curl --http2` filled the
    log, one packet of pipelined upgrades with thousands of lines."""
    capfd.readouterr()
    _read_answers(gateway.base_url, _upgrade_request("/healthz", b"", method="GET") * 3, 3)
    captured = capfd.readouterr()
    lines = (captured.out + captured.err + caplog.text).splitlines()
    assert not [line for line in lines if "WebSocket" in line or "Unsupported upgrade" in line]
    assert len([line for line in lines if "protocol upgrade ignored" in line]) == 1, lines
