"""Clients that stop sending: a body has a deadline, and a stop does not wait for them.

A client that declares a `Content-Length` and sends less held its connection
slot (one of `limit_concurrency`) for as long as it stayed connected, and a
gateway told to stop waited for its request for ever.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from gateway_harness import (
    EPCIS_EXAMPLE,
    GatewayProcess,
    Harness,
    gateway_settings,
    half_sent_request,
    in_flight,
    metric,
    post_in_background,
    protocol_refusals,
    read_response,
    running_gateway_process,
    send_settled,
    sending_until_answered,
    start_gateway,
    token_of,
    trickled_request,
    wait_until_in_flight,
    wait_until_metric,
)
from readable import readable_within
from samples import fresh_scan as scan

from schemas.epcis import load_epcis_mapping
from streams.ingest.admission import retry_after_bounds


def test_a_body_that_stops_arriving_is_answered_408_within_its_deadline(
    gateway_factory: Callable[..., Harness],
) -> None:
    gw = gateway_factory(body_timeout_s=1.0)
    started = time.monotonic()
    with half_sent_request(gw.base_url) as sock:
        wait_until_in_flight(gw.base_url, 1)
        status, headers, body = read_response(sock, timeout_s=15)
    assert in_flight(gw.base_url) == 0
    waited = time.monotonic() - started
    assert status == 408
    assert headers["connection"] == "close"
    answer = json.loads(body)
    assert answer["error"] == "body_timeout"
    assert "within 1 s" in answer["detail"]
    assert 1.0 <= waited < 10.0
    # the slot is free again: the gateway answers the next request
    assert gw.client.get("/healthz").status_code == 200
    assert gw.read_all("scans") == []


def test_a_body_trickled_below_the_minimum_rate_frees_its_slot_after_the_grace(
    gateway_factory: Callable[..., Harness], capfd: pytest.CaptureFixture[str]
) -> None:
    """A client with a valid token sending its body a few bytes a second held its slot
    for all of `body_timeout_s` (30 s): `limit_concurrency` of them blocked every other
    publisher that long. Past the grace, such a body is refused and its slot freed."""
    gw = gateway_factory(limit_concurrency=1, admission_wait_s=30, body_rate_grace_s=2.0)
    body = b"[" + b" " * 998 + b"]"
    with trickled_request(gw.base_url, body, piece=1, every_s=0.2) as sock:  # 5 bytes/s
        wait_until_in_flight(gw.base_url, 1)
        held_since = time.monotonic()
        waiter, answers = post_in_background(gw)
        wait_until_metric(gw.base_url, "chainwatch_gateway_requests_waiting", 1)
        status, headers, answer = read_response(sock, timeout_s=25)
        refused_after = time.monotonic() - held_since
    waiter.join(timeout=30)
    assert status == 408, answer
    assert headers["connection"] == "close"
    refusal = json.loads(answer)
    assert refusal["error"] == "body_too_slow"
    assert "below the gateway's minimum of 240 bytes/s after 2 s" in refusal["detail"]
    # the grace and what a loaded machine adds (it failed once at +3 s), far from the
    # `body_timeout_s` (30 s) the slot was held for before
    assert refused_after < 15.0
    assert [a.status_code for a in answers] == [202], [a.text for a in answers]
    errors = metric(
        gw.base_url, "chainwatch_gateway_errors_total", endpoint="scans", error="body_too_slow"
    )
    assert errors == 1
    logged = capfd.readouterr()
    lines = [line for line in (logged.out + logged.err).splitlines() if "body too slow" in line]
    assert len(lines) == 1, lines
    assert refusal["request_id"] in lines[0]
    assert "caller=admin" in lines[0]
    assert token_of("admin") not in logged.out + logged.err


def send_on(sock: socket.socket) -> None:
    """The client sends on after the answer came: on a connection closed at once, the
    first piece is refused by a reset and the next send fails."""
    for _ in range(3):
        send_settled(sock, b" " * 10)


def test_a_client_still_sending_when_refused_too_slow_reads_the_408(
    gateway_factory: Callable[..., Harness],
) -> None:
    """A client sending its body on when the gateway answered 408 `body_too_slow` (most
    send the whole body before they read) had its next send refused with a reset: the
    gateway closed the connection at once. Now it shuts its side, drops what the client
    still sends (`lingering_close_s`) and the client reads the 408 and the connection's
    end; the request's slot is free meanwhile."""
    gw = gateway_factory(
        limit_concurrency=1, admission_wait_s=30, body_rate_grace_s=1.0, lingering_close_s=60
    )
    with sending_until_answered(gw.base_url) as sock:
        send_on(sock)
        waiter, answers = post_in_background(gw)  # while the connection lingers
        waiter.join(timeout=30)
        assert [a.status_code for a in answers] == [202], [a.text for a in answers]
        status, headers, answer = read_response(sock, timeout_s=10)
    assert status == 408, answer
    assert headers["connection"] == "close"
    assert json.loads(answer)["error"] == "body_too_slow"


def test_a_client_still_sending_a_body_refused_before_it_was_read_reads_the_413(
    gateway_factory: Callable[..., Harness],
) -> None:
    """The same for an answer sent before the body was read (here a declared length
    beyond `max_body_bytes`) to a client that asked to close the connection after it."""
    gw = gateway_factory(max_body_bytes=1024)
    with sending_until_answered(gw.base_url, 100_000, "Connection: close\r\n") as sock:
        send_on(sock)
        status, _, answer = read_response(sock, timeout_s=10)
    assert status == 413, answer
    assert json.loads(answer)["error"] == "too_large"


def test_a_client_sending_on_after_an_early_413_on_a_kept_connection_is_served_next(
    gateway_factory: Callable[..., Harness],
) -> None:
    """An answer sent before the body was read that keeps the connection (the client did
    not ask to close it): the rest of the body is read and dropped, and the connection
    serves the client's next request (docs/ingest.md, Admission)."""
    gw = gateway_factory(max_body_bytes=1024)
    host, port = gw.base_url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/scans HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token_of('admin')}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        readable_within(sock, 10)  # the 413 is there before any of the body
        for _ in range(10):
            send_settled(sock, b" " * 10_000)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answers = b""
        while b'{"status":"ok"}' not in answers and (chunk := sock.recv(65536)):
            answers += chunk
    assert answers.startswith(b"HTTP/1.1 413 "), answers
    assert answers.count(b"HTTP/1.1 200 ") == 1, answers


def test_a_pipelining_client_refused_with_connection_close_reads_the_503(
    gateway_factory: Callable[..., Harness],
) -> None:
    """A client that sends its next request before the answer (pipelining) and is answered
    with `Connection: close` (here 503 `too_many_connections`) while that request waits
    unanswered: the requests the gateway had read were complete, so its close did not
    linger, and the client's next send was refused by a reset."""
    gw = gateway_factory(limit_connections=2, limit_concurrency=1)
    host, port = gw.base_url.removeprefix("http://").split(":")
    request = b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]"
    held = [socket.create_connection((host, int(port)), timeout=15) for _ in range(2)]
    try:
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            sock.sendall(request * 2)  # the second waits for the first's answer
            readable_within(sock, 10)
            send_on(sock)  # pipelining on
            status, headers, body = read_response(sock, timeout_s=10)
    finally:
        for held_sock in held:
            held_sock.close()
    assert status == 503, body
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == "too_many_connections"


def test_a_lingering_close_of_zero_closes_at_once(
    gateway_factory: Callable[..., Harness],
) -> None:
    """`lingering_close_s=0` turns it off: what the client sends on is refused by a reset."""
    gw = gateway_factory(max_body_bytes=1024, lingering_close_s=0)
    with (
        sending_until_answered(gw.base_url, 100_000, "Connection: close\r\n") as sock,
        pytest.raises((BrokenPipeError, ConnectionResetError)),
    ):
        send_on(sock)


def test_a_slow_body_above_the_minimum_rate_is_served_past_the_grace(
    gateway_factory: Callable[..., Harness],
) -> None:
    """The minimum is an average since the body began, not a deadline for the whole body."""
    gw = gateway_factory(body_rate_grace_s=0.5, min_body_bytes_per_s=240)
    body = json.dumps([scan() for _ in range(10)]).encode()
    assert len(body) > 1500
    with trickled_request(gw.base_url, body, piece=100, every_s=0.1) as sock:  # ~1 KB/s
        status, _, answer = read_response(sock, timeout_s=15)
    assert status == 202, answer
    assert json.loads(answer)["accepted"] == 10


def test_a_chunked_body_that_starts_after_the_grace_is_refused_however_fast_the_rest(
    gateway_factory: Callable[..., Harness],
) -> None:
    """docs/ingest.md (Admission): a client that builds its batch while sending it is
    refused when its first bytes come after the grace; the minimum is the same for a
    chunked body, which declares no length."""
    gw = gateway_factory(body_rate_grace_s=1.0, body_timeout_s=60.0)
    host, port = gw.base_url.removeprefix("http://").split(":")
    head = (
        "POST /v1/scans HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {token_of('admin')}\r\n"
        "Content-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())  # the batch is still being built
        status, headers, answer = read_response(sock, timeout_s=15)  # until it closes
    assert status == 408, answer
    assert headers["connection"] == "close"
    assert json.loads(answer)["error"] == "body_too_slow"
    # refused at the grace (1 s), or as late as a loaded machine runs the timer
    assert re.search(r"\(0 bytes in \d+\.\d s\)", json.loads(answer)["detail"]), answer
    assert gw.read_all("scans") == []


def test_a_stop_does_not_wait_for_a_client_that_holds_a_request_open(
    kafka_bootstrap: str,
) -> None:
    settings = gateway_settings(
        kafka_bootstrap, body_timeout_s=600.0, min_body_bytes_per_s=0, shutdown_grace_s=1.0
    )
    server, url = start_gateway(settings, load_epcis_mapping(EPCIS_EXAMPLE / "mapping.yaml"))
    with half_sent_request(url):
        wait_until_in_flight(url, 1)  # its handler waits for the body
        started = time.monotonic()
        server.stop(timeout_s=30)
        stopped_in = time.monotonic() - started
    # the grace (1 s), then the publisher's close: seconds, not the body's 600 s
    assert stopped_in < 20.0


def test_a_stop_does_not_wait_for_a_connection_that_lingers(kafka_bootstrap: str) -> None:
    """A stop closes a lingering connection at once, and one answered during the stop
    (a request it cut) does not linger: one left open kept the event loop from closing."""
    settings = gateway_settings(kafka_bootstrap, body_rate_grace_s=1.0, lingering_close_s=60)
    server, url = start_gateway(settings, load_epcis_mapping(EPCIS_EXAMPLE / "mapping.yaml"))
    with sending_until_answered(url) as sock:
        send_on(sock)  # the 408 was answered: the connection lingers
        started = time.monotonic()
        server.stop(timeout_s=30)
        stopped_in = time.monotonic() - started
        assert read_response(sock, timeout_s=10)[0] == 408
    assert stopped_in < 20.0


@contextmanager
def held_open_at_a_gateway_process(
    kafka_bootstrap: str, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, socket.socket]]:
    """A `chainwatch gateway` process (1 s shutdown grace) with one request in flight
    whose body never comes."""
    with (
        running_gateway_process(
            kafka_bootstrap,
            tmp_path,
            body_timeout_s=600.0,
            min_body_bytes_per_s=0,
            shutdown_grace_s=1.0,
        ) as gw,
        half_sent_request(gw.base_url) as sock,
    ):
        wait_until_in_flight(gw.base_url, 1)
        yield gw, sock


@pytest.mark.slow
def test_sigterm_ends_chainwatch_gateway_while_a_client_holds_a_request_open(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with held_open_at_a_gateway_process(kafka_bootstrap, tmp_path) as (gw, _sock):
        started = time.monotonic()
        gw.process.terminate()
        code = gw.process.wait(timeout=30)
        stopped_in = time.monotonic() - started
    assert code == 0, (tmp_path / "gateway.log").read_text()
    assert stopped_in < 20.0


def test_a_client_that_goes_away_mid_body_is_counted_not_a_server_error(
    gateway_factory: Callable[..., Harness],
) -> None:
    gw = gateway_factory()
    with half_sent_request(gw.base_url):
        wait_until_in_flight(gw.base_url, 1)
    wait_until_in_flight(gw.base_url, 0)
    metrics = httpx.get(f"{gw.base_url}/metrics", timeout=5).text
    assert 'chainwatch_gateway_errors_total{endpoint="scans",error="client_disconnected"} 1.0' in (
        metrics
    )
    assert 'status="500"' not in metrics


def test_a_connection_whose_headers_never_end_is_closed_and_frees_its_slot(
    gateway_factory: Callable[..., Harness],
) -> None:
    gw = gateway_factory(header_timeout_s=1.0, limit_connections=2, limit_concurrency=1)
    host, port = gw.base_url.removeprefix("http://").split(":")
    silent = [socket.create_connection((host, int(port)), timeout=15) for _ in range(2)]
    try:
        silent[0].sendall(b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Le")
        started = time.monotonic()
        for sock in silent:
            assert sock.recv(1) == b"", "the gateway answered a request it never got"
        closed_in = time.monotonic() - started
    finally:
        for sock in silent:
            sock.close()
    assert closed_in < 10.0
    # both slots are free again: the app answers (401), not the 503 beyond the limit
    # (not /healthz: the ops paths are served beyond it)
    with httpx.Client(base_url=gw.base_url, timeout=10) as client:
        assert client.post("/v1/scans").status_code == 401


def test_headers_beyond_the_limit_are_431_at_once_and_the_gateway_stays_responsive(
    gateway_factory: Callable[..., Harness],
) -> None:
    gw = gateway_factory(header_timeout_s=30.0)
    host, port = gw.base_url.removeprefix("http://").split(":")
    chunk = b"a" * (1024 * 1024)
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(8):  # the gateway closes the connection after its answer
                sock.sendall(chunk)
                probe_started = time.monotonic()
                assert gw.client.get("/healthz").status_code == 200
                assert time.monotonic() - probe_started < 1.0
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status, headers, body = read_response(sock, timeout_s=10)
        except ConnectionResetError:  # the close raced the client's unread sends
            pytest.fail("no 431 before the connection was reset")
        answered_in = time.monotonic() - started
    assert status == 431
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] == "headers_too_large"
    assert answer["request_id"] == headers["x-request-id"]
    assert "65536 bytes" in answer["detail"]
    assert answered_in < 10.0  # not the header deadline (30 s)
    assert protocol_refusals(gw.base_url, 431, "headers_too_large") == 1


def test_headers_just_below_the_limit_and_a_large_body_in_the_same_packets_are_served(
    gateway_factory: Callable[..., Harness],
) -> None:
    gw = gateway_factory()
    host, port = gw.base_url.removeprefix("http://").split(":")
    records = [
        {
            "event_id": f"hdr-{uuid.uuid4().hex[:12]}-{i}",
            "order_id": "PO-1",
            "stage": "dyeing",
            "action": "started",
            "unit_id": "DYE-01",
            "event_time": "2026-11-22T08:05:00+01:00",
            "attributes": {"note": "x" * 200},
        }
        for i in range(400)
    ]
    body = json.dumps(records).encode()
    assert len(body) > 100_000
    head = (
        "POST /v1/scans HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {token_of('admin')}\r\n"
        "Content-Type: application/json\r\n"
        f"X-Padding: {'p' * 60_000}\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert len(head) < 64 * 1024
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(head + body)
        status, _, answer = read_response(sock, timeout_s=30)
    assert status == 202, answer
    assert json.loads(answer)["accepted"] == 400


@pytest.mark.slow
def test_a_request_cut_by_shutdown_is_answered_503_without_a_traceback(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with held_open_at_a_gateway_process(kafka_bootstrap, tmp_path) as (gw, sock):
        gw.process.terminate()
        status, headers, body = read_response(sock, timeout_s=20)
        code = gw.process.wait(timeout=30)
    log = (tmp_path / "gateway.log").read_text()
    assert status == 503, body
    least, most = retry_after_bounds(gw.settings.gateway.retry_after_s)
    assert least <= int(headers["retry-after"]) <= most  # jittered
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] == "shutting_down"
    assert answer["request_id"] == headers["x-request-id"]
    assert code == 0, log
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log
    assert "[error" not in log, log


def test_a_cancel_outside_the_operations_is_503_or_just_ends() -> None:
    import asyncio
    from typing import Any

    from streams.ingest.app import ShutdownAnswer

    async def run(start_first: bool) -> list[dict[str, Any]]:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            if start_first:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            await asyncio.Event().wait()  # a request that never ends

        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.disconnect"}

        scope = {"type": "http", "path": "/x", "headers": [], "state": {"request_id": "r-1"}}
        task = asyncio.create_task(ShutdownAnswer(app, retry_after_s=5)(scope, receive, send))
        await asyncio.sleep(0.01)
        task.cancel()
        await task  # ends without raising
        return sent

    answered = asyncio.run(run(start_first=False))
    assert answered[0]["status"] == 503
    retry_after = dict(answered[0]["headers"])[b"retry-after"]
    assert 3 <= int(retry_after) <= 7  # 5 s +- 40 %, jittered
    assert json.loads(answered[1]["body"])["error"] == "shutting_down"
    assert json.loads(answered[1]["body"])["request_id"] == "r-1"
    assert [m["type"] for m in asyncio.run(run(start_first=True))] == ["http.response.start"]


def test_limit_connections_open_connections_are_served_the_one_asking_included(
    gateway_factory: Callable[..., Harness],
) -> None:
    """uvicorn counts the connection asking among its open ones: at `limit_connections=2`
    one other open connection got every request a 503 (and at 1 the gateway refused all)."""
    gw = gateway_factory(limit_connections=2, limit_concurrency=1)
    host, port = gw.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15):
        response = gw.post("/v1/scans", scan())
    assert response.status_code == 202, response.text


def test_beyond_limit_connections_the_answer_is_a_json_503_with_a_jittered_retry_after(
    gateway_factory: Callable[..., Harness],
) -> None:
    """uvicorn's own 503 was plain text without `Retry-After`: a client could neither
    tell when to come back nor tell the gateway's refusal from a proxy's."""
    gw = gateway_factory(limit_connections=2, limit_concurrency=1, retry_after_s=7)
    host, port = gw.base_url.removeprefix("http://").split(":")
    held = [socket.create_connection((host, int(port)), timeout=15) for _ in range(2)]
    try:
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            sock.sendall(b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]")
            status, headers, body = read_response(sock, timeout_s=10)
        # a liveness probe refused here would get a merely busy gateway restarted
        for path in ("/healthz", "/readyz", "/metrics"):
            with httpx.Client(base_url=gw.base_url, timeout=10) as client:
                assert client.get(path).status_code == 200, path
    finally:
        for sock in held:
            sock.close()
    assert status == 503, body
    assert headers["content-type"] == "application/json"
    assert 5 <= int(headers["retry-after"]) <= 9  # 7 s +- 40 %, rounded down
    answer = json.loads(body)
    assert answer["error"] == "too_many_connections"
    assert answer["request_id"] == headers["x-request-id"]
    assert protocol_refusals(gw.base_url, 503, "too_many_connections") == 1
