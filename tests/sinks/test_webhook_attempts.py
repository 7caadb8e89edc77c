"""One webhook attempt against hostile receivers: deadlines and body caps (no Kafka)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from standardwebhooks import Webhook
from webhook_servers import Behaviour, drip, huge_error, serve, status

from sinks.webhooks.delivery import (
    RESPONSE_BODY_CAP,
    DeliveryResult,
    RetryPolicy,
    attempt,
    deliver,
    http_client,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_dripping_receiver_cannot_hold_an_attempt_past_its_timeout() -> None:
    policy = RetryPolicy(timeout_s=1.0)

    async def run() -> tuple[float, int, str]:
        async with serve(drip(0.2)) as server, http_client(policy) as http:
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
        async with serve(huge_error(total)) as server, http_client(policy) as http:
            result = await attempt(
                http, server.url, Webhook(SECRET), "msg_1", "{}", deadline_s=30.0
            )
            await asyncio.wait_for(server.finished.wait(), timeout=20)
            return result.status, server.body_bytes_sent, result.error

    status, sent, error = asyncio.run(run())
    assert (status, error) == (500, "HTTP 500")
    # what the kernel's socket buffers absorb, not the body
    assert RESPONSE_BODY_CAP < sent < 32 * 1024 * 1024


def _deliver(behaviour: Behaviour, policy: RetryPolicy, **kwargs: Any) -> DeliveryResult:
    async def run() -> DeliveryResult:
        async with serve(behaviour) as server, http_client(policy) as http:
            return await asyncio.wait_for(
                deliver(http, server.url, Webhook(SECRET), "msg_1", "{}", policy, **kwargs),
                timeout=60,
            )

    return asyncio.run(run())


def test_retry_after_zero_is_raised_to_the_minimum() -> None:
    policy = RetryPolicy(timeout_s=1.0, min_retry_after_s=0.25, retry_horizon_s=1.5)
    result = _deliver(status(429, {"Retry-After": "0"}), policy)
    assert not result.delivered
    assert 2 <= result.attempts <= 7  # 1.5 s / 0.25 s, not thousands


def test_a_huge_retry_after_is_capped_and_attempts_are_bounded() -> None:
    policy = RetryPolicy(timeout_s=1.0, max_retry_after_s=2.0, retry_horizon_s=3600, max_attempts=3)
    delays: list[float] = []

    async def no_wait(delay: float) -> None:
        delays.append(delay)

    result = _deliver(status(429, {"Retry-After": "86400"}), policy, sleep=no_wait)
    assert (result.attempts, delays) == (3, [2.0, 2.0])
    assert "gave up after 3 attempts" in result.last_error
