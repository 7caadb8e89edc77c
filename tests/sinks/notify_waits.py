"""What the notifier's integration tests share: an endpoint's signing secret, the offsets
its consumer group committed, and a wait on a condition from a notifier's own loop
(tests/sinks/test_webhook_delivery.py, test_webhook_failures.py, test_webhook_done.py)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import time
from collections.abc import Awaitable, Callable

from kafka import KafkaConsumer, TopicPartition

from chainwatch.settings import Settings
from streams.topics import ALERTS


def secret_for(name: str) -> str:
    """A Standard Webhooks secret of its own for endpoint `name`."""
    return "whsec_" + base64.b64encode(f"secret-of-{name}-0123456789".encode()).decode()


def committed(settings: Settings, group: str) -> int:
    """Offsets of `alerts` committed by a consumer group, summed over partitions."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=group)
    try:
        topic = settings.kafka.topic(ALERTS)
        parts = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in parts)
    finally:
        consumer.close()


async def committed_off_loop(settings: Settings, group: str) -> int:
    """`committed` on a thread, for a test whose notifiers run on this loop.

    Its kafka-python client blocks while it bootstraps, finds the group's coordinator,
    fetches the offsets and closes: 0.2-1.9 s a call on the loaded 2-core VM (two CPU
    hogs, tracemalloc). Polled every 50 ms on the notifiers' own loop, it froze their
    heartbeats, read-backs and commits for most of the wait: a rebalance's commit ran
    out of its `COMMIT_TIMEOUT_S` once.
    """
    return await asyncio.to_thread(committed, settings, group)


async def until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str
) -> None:
    """Poll `condition` (a plain or an async one) until it holds, at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await _holds(condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)  # polling a condition, with a deadline


async def _holds(answer: bool | Awaitable[bool]) -> bool:
    return await answer if inspect.isawaitable(answer) else answer
