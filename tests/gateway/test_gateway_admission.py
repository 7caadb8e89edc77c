"""The gateway admits requests, not connections: a burst is served, idle connections cost
no slot, and a request beyond the limit waits briefly before a jittered 503.

uvicorn's `limit_concurrency` (64) counted every open connection: 300 scanners
posting at once after a network blip got 300 x 503 `too_many_connections`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from gateway_harness import (
    EPCIS_EXAMPLE,
    Harness,
    gateway_settings,
    half_sent_request,
    metric,
    post_in_background,
    running_gateway_process,
    scans_post_head,
    start_gateway,
    wait_until_in_flight,
    wait_until_metric,
)
from samples import fresh_scan as scan

from schemas.epcis import load_epcis_mapping

pytestmark = pytest.mark.integration

WAITING = "chainwatch_gateway_requests_waiting"
ERRORS = "chainwatch_gateway_errors_total"


def test_a_burst_of_300_posts_at_once_is_served_with_the_default_limits(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    clients = 300
    with running_gateway_process(kafka_bootstrap, tmp_path) as gw:
        answers = asyncio.run(_burst(gw.base_url, clients))
        statuses = sorted({status for status, _ in answers})
        refused = [body for status, body in answers if status != 202][:3]
        assert statuses == [202], refused
        assert metric(gw.base_url, WAITING) == 0
        assert (
            metric(gw.base_url, "chainwatch_gateway_requests_total", endpoint="scans", status="202")
            == clients
        )


async def _burst(base_url: str, clients: int) -> list[tuple[int, bytes]]:
    """`clients` posts of a scan, each on a connection of its own, all opened at once:
    scanners back after a blip. On bare sockets: httpx's pool of 300 connections spent
    ~10 ms of CPU a request matching requests to connections, more than the gateway."""
    host, port = base_url.removeprefix("http://").split(":")

    async def post() -> tuple[int, bytes]:
        body = json.dumps(scan()).encode()
        async with asyncio.timeout(60):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(scans_post_head(host, len(body), "Connection: close\r\n") + body)
                await writer.drain()
                answer = await reader.read()  # to the close the request asked for
            finally:
                writer.close()
                await writer.wait_closed()
        head, _, rest = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), rest

    return await asyncio.gather(*(post() for _ in range(clients)))


def _open(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def test_idle_and_half_open_connections_take_no_slot_of_the_requests_limit(
    gateway_factory: Callable[..., Harness],
) -> None:
    """One slot, no wait: a request is admitted at once although other connections are
    open - idle after a response (keep-alive), or still sending headers without a token."""
    gw = gateway_factory(limit_concurrency=1, admission_wait_s=0)
    idle = [httpx.Client(base_url=gw.base_url, timeout=10) for _ in range(4)]
    half_open = [_open(gw.base_url) for _ in range(4)]
    try:
        for client in idle:
            assert client.post("/v1/scans").status_code == 401  # then kept alive, idle
        for sock in half_open:
            sock.sendall(b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Le")
        response = gw.post("/v1/scans", scan())
        assert response.status_code == 202, response.text
    finally:
        for client in idle:
            client.close()
        for sock in half_open:
            sock.close()


def test_a_request_beyond_the_limit_waits_for_a_slot_and_is_served_when_one_frees(
    gateway_factory: Callable[..., Harness],
) -> None:
    gw = gateway_factory(limit_concurrency=1, admission_wait_s=30, min_body_bytes_per_s=0)
    with half_sent_request(gw.base_url):  # holds the one slot while its body never comes
        wait_until_in_flight(gw.base_url, 1)
        thread, answers = post_in_background(gw)
        wait_until_metric(gw.base_url, WAITING, 1)
    # the holder went away: its slot passes to the waiting request
    thread.join(timeout=30)
    assert [a.status_code for a in answers] == [202], [a.text for a in answers]
    assert metric(gw.base_url, WAITING) == 0


def test_a_request_that_gets_no_slot_in_time_is_refused_503_overloaded_with_a_jittered_retry(
    gateway_factory: Callable[..., Harness],
) -> None:
    gw = gateway_factory(
        limit_concurrency=1, admission_wait_s=0.2, retry_after_s=10, min_body_bytes_per_s=0
    )
    with half_sent_request(gw.base_url):
        wait_until_in_flight(gw.base_url, 1)
        response = gw.post("/v1/scans", scan())
    assert response.status_code == 503, response.text
    answer = response.json()
    assert answer["error"] == "overloaded"
    assert answer["request_id"] == response.headers["x-request-id"]
    retry = int(response.headers["retry-after"])
    assert 6 <= retry <= 14  # 10 s +- 40 %
    assert f"retry in {retry} s" in answer["detail"]
    assert metric(gw.base_url, ERRORS, endpoint="scans", error="overloaded") == 1
    assert metric(gw.base_url, WAITING) == 0
    assert gw.read_all("scans") == []


def test_a_request_without_a_token_is_refused_at_once_even_when_every_slot_is_taken(
    gateway_factory: Callable[..., Harness],
) -> None:
    gw = gateway_factory(limit_concurrency=1, admission_wait_s=30, min_body_bytes_per_s=0)
    with half_sent_request(gw.base_url):
        wait_until_in_flight(gw.base_url, 1)
        assert gw.post("/v1/scans", scan(), token=None).status_code == 401
        assert metric(gw.base_url, WAITING) == 0


def test_a_stop_while_requests_wait_for_a_slot_answers_them_and_does_not_hang(
    kafka_bootstrap: str,
) -> None:
    settings = gateway_settings(
        kafka_bootstrap,
        limit_concurrency=1,
        admission_wait_s=60,
        body_timeout_s=600,
        min_body_bytes_per_s=0,  # the half-sent body holds its slot
        shutdown_grace_s=1.0,
    )
    server, url = start_gateway(settings, load_epcis_mapping(EPCIS_EXAMPLE / "mapping.yaml"))
    gw = Harness(url, settings, httpx.Client(base_url=url, timeout=30))
    try:
        with half_sent_request(url):
            wait_until_in_flight(url, 1)
            waiting = [post_in_background(gw) for _ in range(3)]
            wait_until_metric(url, WAITING, 3)
            server.stop(timeout_s=30)  # fails when the stop hangs
        for thread, _ in waiting:
            thread.join(timeout=30)
    finally:
        gw.client.close()
    answers = [a for _, got in waiting for a in got]
    assert len(answers) == 3
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "shutting_down"
        assert "nothing was published" in answer.json()["detail"]  # it never started
