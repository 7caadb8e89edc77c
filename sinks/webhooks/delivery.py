"""One delivery to one endpoint: sign, POST, retry or give up.

Retry policy (Standard Webhooks' recommendations):
- 2xx: delivered.
- 5xx, timeouts and connection errors: retry with exponential backoff and jitter.
- 408 and 429: retry. After a 408, 429 or 503 (RFC 9110 10.2.3: how long the
  service is expected to be unavailable), a `Retry-After` the receiver sends is a
  minimum wait: clamped to [`min_retry_after_s`, `max_retry_after_s`], and waited
  instead of the backoff only when longer. `Retry-After: 0` or `1` cannot make us
  hammer a receiver nor spend `max_attempts` in seconds, nor a day-long one park a
  delivery past the horizon. A header that is neither ASCII digits nor an HTTP date
  is ignored.
- any other status (4xx, 3xx: redirects are not followed, and 600-999, which no
  standard defines): give up at once.
- a retry that would start after `retry_horizon_s` from the first attempt, or
  would be attempt number `max_attempts + 1`: give up.
- an endpoint whose attempts have all failed for `retry_horizon_s` is down
  (`EndpointHealth`): its deliveries are given up without an attempt, except
  one probe per `max_backoff_s`; the first success (or any answer but 5xx, 408
  or 429) brings it back. So a dead endpoint gives up its whole backlog within
  about one horizon instead of one horizon per queued delivery.
Each attempt is signed afresh (`webhook-timestamp` is the attempt's time, so
receivers can reject stale replays) under the same `webhook-id` and body.

An attempt has one overall deadline, `timeout_s`, covering name resolution,
connecting, sending and reading the answer: a receiver that drips its answer
a byte at a time cannot hold it open longer. Of the answer only the status and
headers matter; at most `RESPONSE_BODY_CAP` bytes of its body are read (never
decompressed), for at most `BODY_GRACE_S`, and the connection is closed on the
rest, so a huge error page costs no memory and a dripping one no time.
Connections go only to addresses the `TargetPolicy` permits (targets.py); a
refused target is given up at once, never retried.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import orjson
import structlog
from standardwebhooks import Webhook

from schemas.bounded_wait import ended_within
from schemas.deadline import deadline
from schemas.http_whitespace import HTTP_WHITESPACE
from sinks.backoff import exponential
from sinks.webhooks.targets import (
    GuardedBackend,
    GuardedTransport,
    Resolver,
    TargetPolicy,
    TargetRefused,
)

RETRYABLE_4XX = frozenset({408, 429})
RETRY_AFTER_STATUSES = RETRYABLE_4XX | {503}
"""Answers whose `Retry-After` says when to retry at the earliest (never sooner than the
backoff, `RetryPolicy.retry_delay`); other 5xx back off exponentially."""
log = structlog.stdlib.get_logger(__name__)

STILL_FAILING_EVERY_S = 60.0
"""How often a failing endpoint is logged again while it goes on failing."""

RESPONSE_BODY_CAP = 64 * 1024
"""Bytes of a response body read at most; the rest is never received."""

BODY_GRACE_S = 1.0
"""Seconds a response body is read at most once the status line is in (the outcome is
decided then; a body read whole only lets the connection be used again). Read until the
attempt's deadline, a receiver that answered 200 at once and dripped its body held every
delivery for the whole `timeout_s`: one alert per 10 s to an endpoint of one worker."""

MAX_ERROR_TEXT = 300
"""Characters of an exception's text kept in a reason (a processing error's trace is in the
log)."""


def _redacted(text: str, hide: Iterable[str]) -> str:
    for secret in hide:
        text = text.replace(secret, "<redacted>")
    return text


def error_text(exc: BaseException, *, hide: Iterable[str] = ()) -> str:
    """`Type: message` on one printable line of at most `MAX_ERROR_TEXT` characters, the
    type's name included, each of `hide` (a URL's token) redacted: an exception's text may
    be anything, a receiver's bytes included."""
    text = _redacted(str(exc), hide)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    whole = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return whole[:MAX_ERROR_TEXT]


def error_trace(exc: BaseException, *, hide: Iterable[str] = ()) -> str:
    """`exc`'s traceback as Python prints it, its causes included, each of `hide`
    redacted: for a log line's `exception`, in place of `exc_info`, whose trace the log's
    formatter renders with every exception's text as it is (an error of a library's
    quoting the URL it was given put its token in the log)."""
    return _redacted("".join(traceback.format_exception(exc)), hide)


def request_secrets(url: str, *extra: str) -> tuple[str, ...]:
    """What of a request to `url` is never shown, longest first: the URL, its path and
    query (Slack's and Teams' tokens) as written and as httpx sends them (percent-encoded,
    dot segments resolved), its user-info and the `Basic` token httpx makes of it, and
    `extra` (a PagerDuty routing key, which the body carries); each also as a JSON string
    escapes it (`_json_escapes`), and each of those as a bytes `repr` escapes it.

    A receiver's bytes are quoted in the error (h11: `illegal status line:
    bytearray(b'...')`): one that echoes the request put the routing key, the
    `Authorization` header, or a path httpx had encoded (`/t%C3%A9...` for `/té...`)
    past a list of the URL's parts as written, into the log, the delivery log and the
    dead letter. The routing key travels JSON-escaped: an echo of the body showed a key
    with a `"`, a `\\` or an `é` as `\\"`, `\\\\` or `\\u00e9`, which hiding the key
    as written missed.
    """
    parts = urlsplit(url)
    sent = httpx.URL(url)
    target = sent.raw_path.decode("ascii")
    path, _, query = target.partition("?")
    user, password = sent.username, sent.password
    basic = base64.b64encode(f"{user}:{password}".encode()).decode() if user or password else ""
    found = (url, parts.path, parts.query, target, path, query, sent.userinfo.decode("ascii"))
    plain = {s for s in (*found, user, password, basic, *extra) if len(s) > 1}
    escaped = plain | {form for s in plain for form in _json_escapes(s)}
    quoted = {form for s in escaped for form in _bytes_reprs(s)}
    return tuple(sorted(escaped | quoted, key=len, reverse=True))


def _json_escapes(text: str) -> tuple[str, ...]:
    """`text` as it reads inside a JSON string: as the body is written (`json.dumps`,
    ASCII only: `\\u00e9`, `records.body_of`), so an echo of the bytes sent shows it, and
    with non-ASCII kept as is (orjson's, JavaScript's `JSON.stringify`), as a receiver
    that parses the body and writes it back shows it. Either escapes `"`, `\\` and
    control characters."""
    return json.dumps(text)[1:-1], orjson.dumps(text).decode()[1:-1]


def _bytes_reprs(text: str) -> tuple[str, ...]:
    """`text` as it reads inside the repr of its bytes (`b'...'`, `b"..."`) and of a
    bytearray (which escapes `'` inside `b"..."` too)."""
    raw = text.encode()
    return (repr(raw)[2:-1], repr(bytearray(raw))[12:-2])


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 10.0
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    retry_horizon_s: float = 3600.0
    min_retry_after_s: float = 1.0
    max_retry_after_s: float = 300.0
    max_attempts: int = 20

    def retry_delay(self, attempts: int, retry_after: float | None) -> float:
        """Seconds before the next attempt, after `attempts` failed ones: the backoff, or
        the receiver's `Retry-After` (clamped) when that is longer.

        `Retry-After` is a minimum, never a replacement: a receiver answering 503 with
        `Retry-After: 1` for ever had its alerts given up after `max_attempts` seconds
        (20 s), where the backoff rides out an hour's outage.
        """
        backoff = self.backoff(attempts)
        if retry_after is None:
            return backoff
        asked = min(max(retry_after, self.min_retry_after_s), self.max_retry_after_s)
        return max(asked, backoff)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (1-based): doubling, capped, ±50 % jitter."""
        return exponential(attempt, self.initial_backoff_s, self.max_backoff_s, jitter=0.5, rng=rng)


RETRY_AFTER_CAP_S = 86_400.0
"""The longest `Retry-After` read (a day); `RetryPolicy` clamps it further to
`max_retry_after_s`. A receiver's number may have any size."""


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds in [0, `RETRY_AFTER_CAP_S`]; None if absent or unreadable.

    RFC 9110 10.2.3: delay-seconds (ASCII digits only) or an HTTP date. Anything
    else is no header at all (the retry then backs off as without one): a
    receiver's header is untrusted input. `"²".isdigit()` is true and `float("²")`
    raised, which once ended an endpoint's delivery worker.
    """
    if not value or not value.isascii():
        return None
    value = value.strip(HTTP_WHITESPACE)
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP_S)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CAP_S)


@dataclass
class AttemptResult:
    status: int
    """HTTP status, 0 when no response arrived."""
    error: str = ""
    retry_after: float | None = None
    refused: bool = False
    """The target address is not allowed: retrying cannot help."""

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        if self.refused:
            return False
        # 5xx only: h11 takes any 3 digits, and a 600 or 999 is no server error of
        # RFC 9110's but an answer no retry will change (it was retried for an hour)
        return self.status == 0 or 500 <= self.status < 600 or self.status in RETRYABLE_4XX


@dataclass
class EndpointHealth:
    """Shared by the deliveries of one endpoint: since when every attempt has failed.

    It also tells the log: a warning when the endpoint starts failing, one every
    `STILL_FAILING_EVERY_S` while it goes on, and a line when it answers again.
    Without them a night shift saw nothing in the notifier's log while an endpoint
    answered 500 or hung for minutes (only the metrics moved).
    """

    endpoint: str = ""
    host: str = ""
    failing_since: float | None = None
    """`time.monotonic()` of the first failure since the last answer, None when healthy."""
    failing_since_utc: datetime | None = None
    last_probe: float = float("-inf")
    failures: int = 0
    """Failed attempts since the last answer."""
    logged_at: float = float("-inf")

    def answered(self) -> None:
        if self.failing_since is not None:
            log.info(
                "webhook_endpoint_recovered",
                endpoint=self.endpoint,
                host=self.host,
                failed_attempts=self.failures,
                failing_for_s=round(time.monotonic() - self.failing_since, 1),
            )
        self.failing_since = self.failing_since_utc = None
        self.failures = 0

    def failed(self, now: float, error: str = "") -> None:
        self.failures += 1
        if self.failing_since is None:
            self.failing_since, self.failing_since_utc = now, datetime.now(UTC)
            self.logged_at = now
            log.warning("webhook_endpoint_failing", endpoint=self.endpoint, host=self.host,
                        error=error)  # fmt: skip
        elif now - self.logged_at >= STILL_FAILING_EVERY_S:
            self.logged_at = now
            log.warning(
                "webhook_endpoint_still_failing",
                endpoint=self.endpoint,
                host=self.host,
                error=error,
                failed_attempts=self.failures,
                failing_for_s=round(now - self.failing_since, 1),
            )

    def down(self, now: float, horizon_s: float) -> bool:
        return self.failing_since is not None and now - self.failing_since >= horizon_s

    def take_probe(self, now: float, interval_s: float) -> bool:
        if now - self.last_probe < interval_s:
            return False
        self.last_probe = now
        return True

    def reason(self, horizon_s: float) -> str:
        since = self.failing_since_utc.isoformat() if self.failing_since_utc else "?"
        return f"endpoint down: every attempt failed since {since} (over {horizon_s:g} s)"


@dataclass
class DeliveryResult:
    delivered: bool
    attempts: int = 0
    status_codes: list[int] = field(default_factory=list)
    last_error: str = ""
    first_attempt_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    latency_ms: float = 0.0


def http_client(
    policy: RetryPolicy,
    *,
    targets: TargetPolicy,
    concurrency: int = 1,
    resolve: Resolver | None = None,
) -> httpx.AsyncClient:
    """The client of one endpoint: guarded targets, no redirects, no proxies from the
    environment (a proxy would connect on our behalf, past the address check), and
    names resolved in `concurrency` threads of its own (`ThreadResolver`: an endpoint
    whose DNS hangs holds no other endpoint's look-ups) unless `resolve` is given."""
    backend = GuardedBackend(targets, resolve, threads=concurrency)
    return _guarded_client(policy, GuardedTransport(backend, max_connections=concurrency))


def _guarded_client(policy: RetryPolicy, transport: GuardedTransport) -> httpx.AsyncClient:
    """A client on a guarded transport: no redirects, no proxies from the environment
    (a proxy would connect on our behalf, past the address check)."""
    return httpx.AsyncClient(
        timeout=policy.timeout_s, follow_redirects=False, trust_env=False, transport=transport
    )


class WorkerClients:
    """An endpoint's HTTP clients, one per worker, each of one connection, over one
    guarded backend (its `concurrency` resolver threads shared) and one TLS context.
    One client with a pool of `concurrency` connections cost ~1 ms of CPU more per
    POST at 16: httpcore's pool checks every connection of the pool (a socket poll
    each) twice a request (bench/webhooks.py). A worker posts one job at a time, so a
    connection of its own is all it uses."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        targets: TargetPolicy,
        workers: int,
        resolve: Resolver | None = None,
    ) -> None:
        self._backend = GuardedBackend(targets, resolve, threads=workers)
        context = httpx.create_ssl_context(trust_env=False)
        self.each = [
            _guarded_client(
                policy,
                GuardedTransport(
                    self._backend, max_connections=1, ssl_context=context, owns_backend=False
                ),
            )
            for _ in range(workers)
        ]
        """The workers' clients, in the order of the workers."""

    async def aclose(self) -> None:
        """Every client's pool, then the backend's look-ups (also if a close fails)."""
        try:
            results = await asyncio.gather(
                *(client.aclose() for client in self.each), return_exceptions=True
            )
        finally:
            self._backend.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result


class Closable(Protocol):
    def aclose(self) -> Awaitable[None]: ...


CLIENT_CLOSE_S = 5.0
"""How long closing an endpoint's HTTP client may take (its pool's connections, its
resolver's threads): past it the close is left to end on its own, logged."""


async def close_client(http: Closable, endpoint: str, *, hide: Iterable[str] = ()) -> None:
    """`http.aclose()`, waited for at most `CLIENT_CLOSE_S`; a failure is logged (`hide`
    redacted, as in the endpoint's other errors), never raised over the error or the
    stop that ended the endpoint.

    In a task of its own, never cancelled: a close that hangs cannot hold the
    endpoint's stop, nor a cancel of the caller (a second Ctrl-C) leave the pool half
    closed and the resolver's threads running; it is left to end on its own.
    """
    closing = asyncio.ensure_future(http.aclose())
    closing.add_done_callback(lambda task: _close_failed(task, endpoint, hide))
    if not await ended_within(closing, CLIENT_CLOSE_S, cancel=False):
        log.warning("webhook_client_close_cut", endpoint=endpoint, after_s=CLIENT_CLOSE_S)


def _close_failed(task: asyncio.Future[None], endpoint: str, hide: Iterable[str]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        error = error_text(exc, hide=hide)
        log.warning("webhook_client_close_failed", endpoint=endpoint, error=error)


def signed_headers(signer: Webhook | None, msg_id: str, body: str, at: datetime) -> dict[str, str]:
    """Standard Webhooks headers; without a signer (Slack, Teams, PagerDuty without a
    secret) the same minus `webhook-signature`: the id still lets a receiver de-duplicate."""
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "user-agent": "chainwatch-notify",
    }
    if signer is not None:
        headers["webhook-signature"] = signer.sign(msg_id, at, body)
    return headers


async def _read_capped(response: httpx.Response, cap: int) -> None:
    """Read (and drop) at most `cap` bytes of the body, raw: no decompression bomb."""
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        if seen >= cap:
            return


async def attempt(
    http: httpx.AsyncClient,
    url: str,
    signer: Webhook | None,
    msg_id: str,
    body: str,
    *,
    deadline_s: float,
    body_cap: int = RESPONSE_BODY_CAP,
    hide: Sequence[str] | None = None,
) -> AttemptResult:
    """One POST, over within `deadline_s` whatever the receiver does; its error shows
    none of `hide` (by default `request_secrets(url)`).

    The outcome is decided by the status line: once it has arrived, a body that
    fails or drips past the deadline does not change it.

    `schemas.deadline`, not a bare `asyncio.timeout`: anyio before 4.16, under httpx,
    swallowed a cancel that came in the turn its connect's own scope was cancelled, and
    the cancelled attempt went on, posted and returned (tests/sinks/test_webhook_cancel.py).
    """
    headers = signed_headers(signer, msg_id, body, datetime.now(UTC))
    result: AttemptResult | None = None
    try:
        async with (
            deadline(deadline_s),
            http.stream("POST", url, content=body.encode(), headers=headers) as response,
        ):
            result = AttemptResult(response.status_code)
            if response.status_code in RETRY_AFTER_STATUSES:
                result.retry_after = retry_after_s(response.headers.get("retry-after"))
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                async with deadline(BODY_GRACE_S):  # past it, the connection is dropped
                    await _read_capped(response, body_cap)
    except TimeoutError:
        if result is None:
            return AttemptResult(0, f"timeout: no answer within {deadline_s:g} s")
    except TargetRefused as exc:
        return AttemptResult(0, f"target refused: {exc}", refused=True)
    except httpx.TimeoutException:
        return AttemptResult(0, "timeout")
    except httpx.HTTPError as exc:  # connection refused, reset, DNS, TLS, protocol errors
        # with its message: `ConnectError` alone read the same for a port nobody listens
        # on, a name that does not resolve and a certificate that does not verify
        return AttemptResult(
            0, error_text(exc, hide=request_secrets(url) if hide is None else hide)
        )
    assert result is not None
    if not result.delivered:
        result.error = f"HTTP {result.status}"
    return result


async def deliver(
    http: httpx.AsyncClient,
    url: str,
    signer: Webhook | None,
    msg_id: str,
    body: str,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_attempt: Callable[[AttemptResult], None] | None = None,
    health: EndpointHealth | None = None,
    hide: Sequence[str] = (),
) -> DeliveryResult:
    """Attempt until delivered, refused for good, past the retry horizon or
    `max_attempts`, or the endpoint is down (see `EndpointHealth`); no error shows the
    request's secrets (`request_secrets` of `url` and `hide`)."""
    health = health or EndpointHealth()
    secrets = request_secrets(url, *hide)
    horizon = policy.retry_horizon_s
    result = DeliveryResult(delivered=False)
    started = time.monotonic()
    while True:
        now = time.monotonic()
        if health.down(now, horizon) and not health.take_probe(now, policy.max_backoff_s):
            result.last_error = health.reason(horizon)
            if result.attempts:
                result.last_error += f"; gave up after {result.attempts} attempts"
            break
        outcome = await attempt(
            http, url, signer, msg_id, body, deadline_s=policy.timeout_s, hide=secrets
        )
        result.attempts += 1
        result.status_codes.append(outcome.status)
        result.last_error = outcome.error
        if on_attempt is not None:
            on_attempt(outcome)
        if outcome.retryable:
            health.failed(now, outcome.error)
        elif not outcome.refused:
            health.answered()
        if outcome.delivered or not outcome.retryable:
            result.delivered = outcome.delivered
            break
        delay = policy.retry_delay(result.attempts, outcome.retry_after)
        if (
            result.attempts >= policy.max_attempts
            or time.monotonic() - started + delay > horizon
            or health.down(time.monotonic(), horizon)
        ):
            result.last_error = f"{outcome.error}; gave up after {result.attempts} attempts"
            break
        await sleep(delay)
    result.finished_at = datetime.now(UTC)
    result.latency_ms = (time.monotonic() - started) * 1000
    return result
