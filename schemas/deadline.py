"""A deadline around third-party code that may swallow a cancellation of our task.

`asyncio.timeout` runs its body in the caller's task, so an outside cancel (a
revocation cancelling the warm-up, the notifier cancelling its consuming task, the
loop's close) lands wherever the body is waiting. aiokafka's closes wait on their
own tasks inside `contextlib.suppress(asyncio.CancelledError)` (`AIOKafkaClient.close`
on its sync task, `Fetcher.close` on its fetch task): the cancel landed there, was
suppressed, and the caller went on as if never cancelled (seen on a real broker for
the gateway publisher's stop, `stop_consumer` and the warm-up's reader stop).
`asyncio.wait_for` hid this by running the call in a task of its own, but on Python
3.11 it drops a cancellation that comes as the call finishes (CPython gh-86296).

`deadline` counts the task's cancel requests (`Task.cancelling()`) on entry and,
when the body ends with more of them and no `CancelledError` came out, raises one.
On 3.11 the `asyncio.timeout`'s own expiry is taken back (`uncancel`) before that
check, so only outside cancels count. Baseline, not "cancelling() != 0": in a task
already being cancelled (a `finally`, an `except BaseException` clean-up) the old
request must not make an unrelated `CancelledError` of the body look like ours.

In `schemas` (no shape, but the one package the engine, the gateway and the sinks
all stand on), like `log_throttle`. A stop's wait for another task (one it cancelled,
or a close in a task of its own) is `bounded_wait.ended_within`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


def cancel_requests() -> int:
    """The current task's pending cancel requests (0 outside a task): a baseline for
    `cancelled_since`."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def cancelled_since(baseline: int) -> bool:
    """Whether the current task was asked to cancel since `cancel_requests()` gave
    `baseline` (and the request was not taken back)."""
    return cancel_requests() > baseline


@contextlib.asynccontextmanager
async def deadline(seconds: float | None) -> AsyncIterator[None]:
    """`asyncio.timeout(seconds)` (None: no deadline; past it `TimeoutError`), and a
    cancellation of our task that the body swallowed is raised on leaving.

    A body that swallowed the cancel and then failed otherwise (a Kafka error after
    its close) ends in `CancelledError` too, chained to that failure: a caller that
    suppresses the failure must not lose the cancel with it.
    """
    baseline = cancel_requests()
    try:
        async with asyncio.timeout(seconds):
            yield
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if cancelled_since(baseline):
            raise asyncio.CancelledError from exc
        raise
    if cancelled_since(baseline):
        raise asyncio.CancelledError
