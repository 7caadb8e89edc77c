"""One webhook attempt against hostile receivers: deadlines and body caps (no Kafka)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from sink_samples import make_alert
from standardwebhooks import Webhook
from structlog.testing import capture_logs
from webhook_pipes import LogProducer, records_of
from webhook_servers import Behaviour, Server, drip, huge_error, raw_status, serve, status

from sinks.backoff import exponential
from sinks.webhooks import dispatcher
from sinks.webhooks.delivery import (
    BODY_GRACE_S,
    MAX_ERROR_TEXT,
    RESPONSE_BODY_CAP,
    AttemptResult,
    DeliveryResult,
    RetryPolicy,
    attempt,
    deliver,
    error_text,
    http_client,
)
from sinks.webhooks.dispatcher import EndpointPipe, PipeConfig, Topics
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import Resolver, TargetPolicy, parse_networks

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOOPBACK = TargetPolicy(parse_networks("127.0.0.1"))
"""These receivers listen on loopback: opted in, as a user would for a local receiver."""


def test_a_dripping_receiver_cannot_hold_an_attempt_past_its_timeout() -> None:
    policy = RetryPolicy(timeout_s=1.0)

    async def run() -> tuple[float, int, str]:
        async with serve(drip(0.2)) as server, http_client(policy, targets=LOOPBACK) as http:
            began = time.monotonic()
            result = await asyncio.wait_for(
                attempt(http, server.url, Webhook(SECRET), "msg_1", "{}", deadline_s=1.0),
                timeout=20,
            )
            return time.monotonic() - began, result.status, result.error

    elapsed, status, error = asyncio.run(run())
    assert status == 0
    assert "timeout" in error
    assert elapsed < 1.5  # the whole answer would take ~7.6 s


def test_a_200_mb_error_body_is_not_read() -> None:
    total = 200 * 1024 * 1024
    policy = RetryPolicy(timeout_s=30.0)

    async def run() -> tuple[int, int, str]:
        async with (
            serve(huge_error(total)) as server,
            http_client(policy, targets=LOOPBACK) as http,
        ):
            result = await attempt(
                http, server.url, Webhook(SECRET), "msg_1", "{}", deadline_s=30.0
            )
            await asyncio.wait_for(server.finished.wait(), timeout=20)
            return result.status, server.body_bytes_sent, result.error

    status, sent, error = asyncio.run(run())
    assert (status, error) == (500, "HTTP 500")
    # what the kernel's socket buffers absorb, not the body
    assert RESPONSE_BODY_CAP < sent < 32 * 1024 * 1024


def _answer_then_drip_the_body(interval_s: float) -> Behaviour:
    """A 200 at once, then a body of a MiB one byte every `interval_s` (a proxy streaming
    its answer, or a receiver hostile to its sender)."""

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
        while True:
            w.write(b"x")
            await w.drain()
            s.body_bytes_sent += 1
            await asyncio.sleep(interval_s)  # the behaviour under test: a slow sender

    return answer


def test_an_answer_whose_body_drips_holds_the_attempt_no_longer_than_the_body_grace() -> None:
    """The status line decides the outcome, yet the body was read until the attempt's
    deadline: a receiver answering 200 at once and dripping its body held every delivery
    for the whole `timeout_s`, and its endpoint (one worker) to one alert per 10 s."""
    policy = RetryPolicy(timeout_s=30.0)

    async def run() -> tuple[float, AttemptResult]:
        async with (
            serve(_answer_then_drip_the_body(0.05)) as server,
            http_client(policy, targets=LOOPBACK) as http,
        ):
            began = time.monotonic()
            result = await attempt(http, server.url, Webhook(SECRET), "msg_1", "{}", deadline_s=30)
            return time.monotonic() - began, result

    elapsed, result = asyncio.run(run())
    assert result.delivered
    assert elapsed < BODY_GRACE_S + 10 < 30  # the deadline is far beyond


def _deliver(behaviour: Behaviour, policy: RetryPolicy, **kwargs: Any) -> DeliveryResult:
    async def run() -> DeliveryResult:
        async with serve(behaviour) as server, http_client(policy, targets=LOOPBACK) as http:
            return await asyncio.wait_for(
                deliver(http, server.url, Webhook(SECRET), "msg_1", "{}", policy, **kwargs),
                timeout=60,
            )

    return asyncio.run(run())


@pytest.mark.slow
def test_retry_after_zero_is_raised_to_the_minimum() -> None:
    # a backoff shorter than the minimum: the minimum paces the retries (the backoff's
    # default 0.5-1.5 s first wait left a single attempt in the horizon on a busy machine)
    policy = RetryPolicy(
        timeout_s=1.0, initial_backoff_s=0.01, min_retry_after_s=0.25, retry_horizon_s=1.5
    )
    result = _deliver(status(429, {"Retry-After": "0"}), policy)
    assert not result.delivered
    assert 2 <= result.attempts <= 7  # 1.5 s / 0.25 s, not thousands


@pytest.mark.parametrize("code", [429, 503])
def test_a_huge_retry_after_is_capped_and_attempts_are_bounded(code: int) -> None:
    policy = RetryPolicy(
        timeout_s=1.0,
        initial_backoff_s=0.1,
        max_retry_after_s=2.0,
        retry_horizon_s=3600,
        max_attempts=3,
    )
    delays: list[float] = []

    async def no_wait(delay: float) -> None:
        delays.append(delay)

    result = _deliver(status(code, {"Retry-After": "86400"}), policy, sleep=no_wait)
    assert (result.attempts, delays) == (3, [2.0, 2.0])
    assert "gave up after 3 attempts" in result.last_error


@pytest.mark.parametrize("code", [408, 429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_waited_after_a_408_429_or_503(code: int, form: str) -> None:
    """RFC 9110 10.2.3: on a 503 `Retry-After` says how long the service is expected to be
    unavailable; it was read only on 408 and 429, so a 503 retried after 1 s, 2 s, ..."""
    policy = RetryPolicy(timeout_s=1.0, max_attempts=2)
    later = datetime.now(UTC) + timedelta(seconds=40)
    header = "30" if form == "seconds" else format_datetime(later, usegmt=True)
    delays: list[float] = []

    async def no_wait(delay: float) -> None:
        delays.append(delay)

    result = _deliver(status(code, {"Retry-After": header}), policy, sleep=no_wait)
    assert result.status_codes == [code, code]
    assert len(delays) == 1
    assert delays[0] == 30.0 if form == "seconds" else 35.0 < delays[0] <= 40.0


@pytest.mark.parametrize("code", [408, 429, 503])
def test_a_short_retry_after_does_not_shorten_the_backoff(code: int) -> None:
    """`Retry-After` is a minimum wait: a receiver answering 503 `Retry-After: 1` for
    ever had its alert given up after 20 attempts in ~20 s, where the backoff (1 s,
    2 s, ... capped at 300 s) rides out an hour's outage. A longer one still wins."""
    policy = RetryPolicy(timeout_s=1.0)
    schedule = [
        exponential(n, policy.initial_backoff_s, policy.max_backoff_s)
        for n in range(1, policy.max_attempts)
    ]
    for header, floor in (("1", 1.0), ("30", 30.0)):
        delays: list[float] = []

        async def no_wait(delay: float, delays: list[float] = delays) -> None:
            delays.append(delay)

        result = _deliver(status(code, {"Retry-After": header}), policy, sleep=no_wait)
        assert result.attempts == policy.max_attempts
        assert len(delays) == len(schedule)
        # each wait at least the Retry-After and the backoff's (jitter -50 %) for its attempt
        assert all(d >= max(floor, base / 2) for d, base in zip(delays, schedule, strict=True))
        assert sum(delays) >= sum(schedule) / 2  # ~an hour, as without the header
    assert delays[:5] == [30.0] * 5  # the backoff is shorter there: Retry-After honoured


@pytest.mark.parametrize("code", [400, 404, 600, 999])
def test_a_status_that_is_no_server_error_is_given_up_at_once(code: int) -> None:
    """A 600 or 999 (h11 takes any three digits) was retried as a 5xx for the horizon."""
    policy = RetryPolicy(timeout_s=1.0, max_attempts=3)

    async def no_wait(delay: float) -> None:
        raise AssertionError(f"a retry after {delay} s")

    result = _deliver(status(code), policy, sleep=no_wait)
    assert (result.delivered, result.status_codes, result.last_error) == (
        False,
        [code],
        f"HTTP {code}",
    )


@pytest.mark.parametrize("header", ["\u00b2".encode(), b"\xb2", b"\xff\xfe", b"1e400"])
def test_an_unreadable_retry_after_is_ignored_not_fatal(header: bytes) -> None:
    """`Retry-After: ²` once raised out of `deliver` and ended the endpoint's worker."""
    policy = RetryPolicy(timeout_s=1.0, initial_backoff_s=1.0, max_attempts=3)
    delays: list[float] = []

    async def no_wait(delay: float) -> None:
        delays.append(delay)

    result = _deliver(raw_status(429, b"Retry-After: " + header), policy, sleep=no_wait)
    assert (result.attempts, result.status_codes) == (3, [429, 429, 429])
    assert "gave up after 3 attempts" in result.last_error
    # the header is ignored: the policy's own backoff (1 s, 2 s, +-50 %), not a clamp of it
    assert 0.5 <= delays[0] <= 1.5
    assert 1.0 <= delays[1] <= 3.0


def _resolves_to(address: str) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return [address]

    return resolve


def _post_by_name(
    host: str, resolve: Resolver | None, targets: TargetPolicy
) -> tuple[AttemptResult, Server]:
    policy = RetryPolicy(timeout_s=5.0)

    async def run() -> tuple[AttemptResult, Server]:
        async with serve(status(204)) as server:
            url = f"http://{host}:{server.port}/hook"
            async with http_client(policy, targets=targets, resolve=resolve) as http:
                result = await attempt(http, url, Webhook(SECRET), "msg_1", "{}", deadline_s=5)
            return result, server

    return asyncio.run(run())


def test_a_name_resolving_to_loopback_is_refused_at_connect_time() -> None:
    result, server = _post_by_name("localhost", None, TargetPolicy())  # the system's
    assert result.refused
    assert not result.retryable
    assert "127.0.0.1" in result.error or "::1" in result.error
    assert "ALLOWED_NETWORKS" in result.error
    assert server.requests == 0


def test_a_name_whose_dns_hangs_holds_no_other_endpoints_look_ups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`getaddrinfo` blocks a thread until the resolver gives up, past any cancel: in the
    loop's shared executor, 40 look-ups of one endpoint held every thread and another
    endpoint's attempt timed out. Each endpoint resolves in threads of its own now."""
    answered = threading.Event()  # the DNS server of `slow.test` answers only at the end
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.test":
            answered.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real("127.0.0.1" if host == "fast.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    policy, held = RetryPolicy(timeout_s=5.0), 40  # more than the default executor's 32

    async def run() -> AttemptResult:
        async with (
            serve(status(204)) as server,
            http_client(policy, targets=LOOPBACK, concurrency=held) as slow,
            http_client(policy, targets=LOOPBACK) as fast,
        ):
            slow_url, fast_url = (f"http://{h}:{server.port}/" for h in ("slow.test", "fast.test"))
            stuck = [
                asyncio.create_task(attempt(slow, slow_url, None, f"m{n}", "{}", deadline_s=1))
                for n in range(held)
            ]
            try:
                await asyncio.sleep(0)  # every look-up of `slow` submitted
                return await attempt(fast, fast_url, None, "f", "{}", deadline_s=5)
            finally:
                answered.set()
                await asyncio.gather(*stuck)

    result = asyncio.run(run())
    assert (result.status, result.error) == (204, "")


_HUNG_LOOKUP_AT_STOP = """
import asyncio, socket, time
from sinks.webhooks.delivery import RetryPolicy, attempt, http_client
from sinks.webhooks.targets import TargetPolicy

def getaddrinfo(*args, **kwargs):
    time.sleep(20)  # a DNS server that does not answer
    raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

socket.getaddrinfo = getaddrinfo

async def main():
    async with http_client(RetryPolicy(timeout_s=1.0), targets=TargetPolicy()) as http:
        result = await attempt(http, "https://hung.test/hook", None, "m", "{}", deadline_s=1.0)
    print("stopped:", result.error, flush=True)

asyncio.run(main())
"""


def test_a_look_up_hanging_at_stop_does_not_keep_the_process_alive() -> None:
    """The resolver's threads were a `ThreadPoolExecutor`'s, which Python joins at exit
    even after `shutdown(wait=False)`: a look-up hanging at stop kept the notifier alive
    ~30 s (or for ever) after `process_stopped`, past its stop deadline."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _HUNG_LOOKUP_AT_STOP],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - began
    assert (done.returncode, done.stdout) == (0, "stopped: timeout: no answer within 1 s\n")
    assert elapsed < 10, f"exited {elapsed:.1f} s after start (the look-up sleeps 20 s)"


def test_dns_rebinding_is_checked_on_the_resolved_address() -> None:
    # an allowed-looking public name that now resolves to loopback
    rebound = _resolves_to("127.0.0.1")
    result, server = _post_by_name("hooks.example.com", rebound, TargetPolicy())
    assert (result.refused, server.requests) == (True, 0)
    # allowed explicitly: the checked address is the one connected to, the name is kept
    result, server = _post_by_name("hooks.example.com", rebound, LOOPBACK)
    assert result.status == 204
    assert server.host_headers == [f"hooks.example.com:{server.port}"]


def test_a_refused_target_is_given_up_at_once() -> None:
    policy = RetryPolicy(timeout_s=1.0, initial_backoff_s=0.01)
    result = _deliver(status(204), policy)  # the client below has no loopback opt-in

    async def run() -> DeliveryResult:
        async with serve(status(204)) as server, http_client(policy, targets=TargetPolicy()) as h:
            return await deliver(h, server.url, Webhook(SECRET), "msg_1", "{}", policy)

    assert result.delivered
    refused = asyncio.run(run())
    assert (refused.delivered, refused.attempts) == (False, 1)
    assert "target refused" in refused.last_error


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
        "224.0.0.1", "255.255.255.255", "100.64.0.1", "::1", "fe80::1", "fc00::1", "::",
        "ff02::1", "::ffff:169.254.169.254", "::ffff:127.0.0.1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused_unless_allowed(address: str) -> None:
    parsed = ipaddress.ip_address(address)
    assert not TargetPolicy().permits(parsed)
    assert TargetPolicy(parse_networks("0.0.0.0/0, ::/0")).permits(parsed)


def test_public_addresses_are_permitted() -> None:
    for address in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"):
        assert TargetPolicy().permits(ipaddress.ip_address(address))


def test_a_failing_endpoint_is_logged_when_it_fails_while_it_goes_on_and_when_it_recovers() -> None:
    """The notifier logged nothing while an endpoint answered 500 or hung for minutes;
    only the metrics moved. Once per change, and once a minute in between: a backlog
    of thousands of retries must not become thousands of lines."""
    from structlog.testing import capture_logs

    from sinks.webhooks.delivery import STILL_FAILING_EVERY_S, EndpointHealth

    health = EndpointHealth("ops", "hooks.example.com")
    with capture_logs() as logs:
        health.failed(100.0, "HTTP 500")
        for n in range(1, 50):
            health.failed(100.0 + n, "HTTP 500")
        health.failed(100.0 + STILL_FAILING_EVERY_S, "timeout")
        health.answered()
        health.answered()
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("webhook_endpoint_failing", "warning"),
        ("webhook_endpoint_still_failing", "warning"),
        ("webhook_endpoint_recovered", "info"),
    ]
    assert logs[0]["error"] == "HTTP 500"
    assert logs[1]["failed_attempts"] == 51
    assert logs[2]["failed_attempts"] == 51
    assert all(e["endpoint"] == "ops" and e["host"] == "hooks.example.com" for e in logs)


def _garbage_echoing(path: bytes) -> Behaviour:
    """A status line that is no HTTP, quoting the request's path and a terminal escape."""

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _s: Server) -> None:
        w.write(b"\x1b[2J" + path + b"\r\n\r\n")
        await w.drain()

    return answer


def test_a_failed_attempt_says_why_on_one_line_without_the_urls_token() -> None:
    """`ConnectError` alone read the same for a port nobody listens on, a name that does not
    resolve and a certificate that does not verify; the message says which, and never the
    URL's path (Slack's and Teams' token) even when the receiver quotes it back."""
    policy = RetryPolicy(timeout_s=5.0)

    async def run() -> tuple[str, str]:
        async with (
            serve(_garbage_echoing(b"/services/T0/SECRET")) as server,
            http_client(policy, targets=LOOPBACK) as http,
        ):
            url = server.url.removesuffix("hook") + "services/T0/SECRET"
            garbled = await attempt(http, url, None, "msg_1", "{}", deadline_s=5.0)
        # the server is closed: nobody listens on its port any more
        async with http_client(policy, targets=LOOPBACK) as http:
            refused = await attempt(http, url, None, "msg_1", "{}", deadline_s=5.0)
        return garbled.error, refused.error

    garbled, refused = asyncio.run(run())
    assert garbled.startswith("RemoteProtocolError: illegal status line")
    assert refused.startswith("ConnectError: ")
    assert len(refused) > len("ConnectError: ")
    for error in (garbled, refused):
        assert "SECRET" not in error
        assert error.isprintable()


def _quoting_the_request_back(pieces: list[Callable[[bytes, bytes], bytes]]) -> Behaviour:
    """A status line that is no HTTP, quoting a piece of the request (the n-th request the
    n-th piece of its line and headers, and its body): what an echo service, a broken
    proxy or a hostile receiver sends."""

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        piece = pieces[(s.requests - 1) % len(pieces)](s.heads[-1], s.bodies[-1])
        w.write(b"HTTP/1.1 " + piece + b"\r\n\r\n")
        await w.drain()

    return answer


def _header(name: bytes) -> Callable[[bytes, bytes], bytes]:
    return lambda head, _body: next(
        line for line in head.split(b"\r\n") if line.lower().startswith(name + b":")
    )


async def _settle_each(name: str, url: str, routing_key: str, values: list[bytes]) -> LogProducer:
    """A PagerDuty endpoint's pipe, no consumer: `values` handed to it as read from the
    alerts topic, each settled with one attempt; what it produced."""
    policy = RetryPolicy(timeout_s=5.0, max_attempts=1)
    tp = TopicPartition("cw.alerts", 0)
    producer = LogProducer()
    endpoint = Endpoint.model_validate(
        {"name": name, "url": url, "format": "pagerduty", "routing_key": routing_key}
    )
    topics = Topics("cw.alerts", "cw.webhook-deliveries", "cw.webhook-dead-letter")
    config = PipeConfig(
        "unused:9092", "cw-notify", topics, policy, LOOPBACK, 10, consumer_options={}
    )
    pipe = EndpointPipe(endpoint, config, producer)  # type: ignore[arg-type]
    await pipe.handle(tp, records_of(tp, values, 0))
    async with http_client(policy, targets=LOOPBACK) as http:
        while not pipe.queue.empty():
            await pipe._settle(http, pipe.queue.get_nowait())
    return producer


def _echoed(
    pieces: list[Callable[[bytes, bytes], bytes]], key: str, url_of: Callable[[int], str]
) -> tuple[Server, list[str]]:
    """One alert per piece settled on a PagerDuty endpoint at `url_of(port)` whose receiver
    quotes that piece of the request back; each given up. The receiver, and every error
    the log, the delivery log and the dead letters kept."""

    async def run() -> tuple[Server, LogProducer]:
        async with serve(_quoting_the_request_back(pieces)) as server:
            alerts = [make_alert(n).model_dump_json().encode() for n in range(len(pieces))]
            producer = await _settle_each("echoed", url_of(server.port), key, alerts)
        return server, producer

    with capture_logs() as logs:
        server, producer = asyncio.run(run())
    assert server.requests == len(pieces)
    assert producer.sent.count("cw.webhook-dead-letter") == len(pieces)  # each given up
    return server, [str(e.get("error", "")) for e in logs] + [v.decode() for v in producer.values]


def test_a_receiver_quoting_the_request_back_gets_no_secret_into_the_log_or_the_records() -> None:
    """The routing key (in the body), the URL's password (as httpx's `Basic` token) and its
    path and query as httpx sends them (percent-encoded: `t%C3%A9` for `té`) were quoted in
    the error of an attempt whose receiver echoed them in its status line, and so in the
    log, the delivery log and the dead letter: only the URL's parts as written were hidden."""
    key = "R0UTING-KEY-SECRET-0123456789abcd"
    pieces = [
        lambda head, _body: head.split(b"\r\n")[0],  # POST /v2/t%C3%A9s-SECRET?... HTTP/1.1
        _header(b"authorization"),  # Basic <base64 of us3r:pa55w0rd-SECRET>
        lambda _head, body: body[body.index(b'"routing_key"') :][:120],
    ]

    _, errors = _echoed(
        pieces,
        key,
        lambda port: f"http://us3r:pa55w0rd-SECRET@127.0.0.1:{port}/v2/tés-SECRET?sig=a SECRET",
    )
    assert sum("illegal status line" in e for e in errors) >= 2 * len(pieces)  # quoted, hidden
    token = base64.b64encode(b"us3r:pa55w0rd-SECRET").decode()
    for text in errors:
        assert "SECRET" not in text
        assert token not in text


def test_a_routing_key_quoted_back_json_escaped_is_hidden_in_the_log_and_the_records() -> None:
    """A routing key with a `"`, a `\\`, an `é` or a character beyond U+FFFF travels
    JSON-escaped (the body is `json.dumps`'s, ASCII only: `\\"`, `\\\\`, `\\u00e9`,
    `\\ud83d\\ude00`), and a receiver that parses the body and writes it back escapes it
    its own way (orjson's, JavaScript's: non-ASCII as is). An echo of either put the key
    in the error, and so in the log, the delivery log and the dead letter: only the key as
    written was hidden."""
    key = 'R0UTING-"KEY"-SECRET-back\\slash-\u00e9-\U0001f600'

    def routing_key_on(body: bytes) -> bytes:
        return body[body.index(b'"routing_key"') :][:160]

    pieces = [
        lambda _head, body: routing_key_on(body),  # the bytes sent
        lambda _head, body: routing_key_on(orjson.dumps(json.loads(body))),  # written back
    ]

    server, errors = _echoed(pieces, key, lambda port: f"http://127.0.0.1:{port}/v2/enqueue")
    assert b'\\"KEY\\"-SECRET-back\\\\slash-\\u00e9-\\ud83d\\ude00' in server.bodies[0]
    quoted = [e for e in errors if "illegal status line" in e]
    assert len(quoted) >= 2 * len(pieces)  # the log's and each record's: all hidden
    assert all("<redacted>" in e for e in quoted)
    for text in errors:
        assert "SECRET" not in text


def test_a_delivery_failing_on_a_bug_of_ours_shows_no_secret_in_its_error_or_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `processing_error` (building the message or sending it raised) logged its error
    and trace, and kept its reason in the delivery log and the dead letter, with the
    exception's text as it was: one quoting the URL (as a library's error about it does)
    or the routing key showed them, which every other failure hides."""
    key = "R0UTING-KEY-SECRET-0123456789abcd"
    url = "http://us3r:pa55w0rd-SECRET@127.0.0.1:9/v2/t-SECRET?sig=SECRET"
    alerts = [make_alert(n) for n in range(2)]
    real_render = dispatcher.render

    def render(alert: Any, *args: Any, **kwargs: Any) -> Any:
        if alert.alert_id == alerts[0].alert_id:
            raise ValueError(f"cannot build a message for {url} (routing key {key})")
        return real_render(alert, *args, **kwargs)

    async def deliver(http: Any, to: str, *args: Any, **kwargs: Any) -> Any:
        try:
            raise OSError(f"no route to {to}")
        except OSError as exc:
            raise RuntimeError(f"sending to {to} failed") from exc

    monkeypatch.setattr(dispatcher, "render", render)
    monkeypatch.setattr(dispatcher, "deliver", deliver)
    values = [a.model_dump_json().encode() for a in alerts]

    with capture_logs() as logs:
        producer = asyncio.run(_settle_each("bugged", url, key, values))
    errors = [e for e in logs if e["event"] == "webhook_processing_error"]
    assert [e["error"].split(":")[0] for e in errors] == [
        "building the message failed",
        "delivering failed",
    ]
    assert producer.sent.count("cw.webhook-dead-letter") == 2
    records = [v.decode() for v in producer.values]
    assert all("processing_error: " in r for r in records)
    token = base64.b64encode(b"us3r:pa55w0rd-SECRET").decode()
    for text in [*map(repr, errors), *records]:
        assert "SECRET" not in text
        assert token not in text
    assert "exc_info" not in errors[0]  # its trace is rendered with every text as it is
    assert errors[0]["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: cannot build a message for <redacted>" in errors[0]["exception"]
    assert "OSError: no route to <redacted>" in errors[1]["exception"]  # the cause too


def test_a_failed_attempts_error_is_at_most_max_error_text_characters_type_included() -> None:
    """docs/sinks.md promises at most 300 characters: the message was cut to 300 and then
    given its `Type: ` prefix (314 for a ConnectError)."""
    text = error_text(ConnectionRefusedError("x" * 1_000))
    assert text.startswith("ConnectionRefusedError: xxx")
    assert len(text) == MAX_ERROR_TEXT == 300
