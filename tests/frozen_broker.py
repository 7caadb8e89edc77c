"""What the tests of a producer on a frozen broker (SIGSTOP) share: a topic of their own
on it, and aiokafka's accumulator closes still pending. Their broker is the
`freezable_broker` fixture (conftest.py), one a session shares between them, given to
each test thawed and answering: the session's broker is every test's, so it is never
frozen."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def frozen_topic(bootstrap: str, partitions: int) -> str:
    """A new topic on the broker (created before it is frozen)."""
    name = f"frozen-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


def accumulator_closes_left() -> list[asyncio.Task[Any]]:
    """aiokafka's accumulator closes still pending: a producer's `stop()` starts one, and
    left it waiting for good for batches nothing would send (a stop cut short, a sender
    done first)."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "MessageAccumulator.close"
    ]
