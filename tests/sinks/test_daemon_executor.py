"""`DaemonExecutor`: what the resolver relies on (results, errors, a bound on threads, a
shutdown that cancels queued calls and waits for none) without the process exit itself
(tests/sinks/test_webhook_attempts.py: a look-up hanging at stop)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sinks.daemon_executor import DaemonExecutor, to_daemon_thread


def test_results_errors_and_at_most_max_workers_daemon_threads() -> None:
    pool = DaemonExecutor(2, "test-pool")
    release = threading.Event()
    names: set[str] = set()

    def work(n: int) -> int:
        names.add(threading.current_thread().name)
        assert threading.current_thread().daemon
        release.wait(5)
        if n == 3:
            raise ValueError("three")
        return n * 10

    futures = [pool.submit(work, n) for n in range(5)]
    release.set()
    assert [f.result(5) for f in futures if f is not futures[3]] == [0, 10, 20, 40]
    with pytest.raises(ValueError, match="three"):
        futures[3].result(5)
    assert names <= {"test-pool_0", "test-pool_1"}
    pool.shutdown(wait=True)


def test_shutdown_cancels_queued_calls_and_waits_for_none_under_way() -> None:
    pool = DaemonExecutor(1, "test-pool")
    hung, started = threading.Event(), threading.Event()

    def hang() -> None:
        started.set()
        hung.wait(10)

    running = pool.submit(hang)
    queued = pool.submit(hang)
    assert started.wait(5)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    assert not running.done()
    with pytest.raises(RuntimeError):
        pool.submit(hang)
    hung.set()
    assert running.result(5) is None


def test_to_daemon_thread_returns_and_a_cancelled_call_holds_up_no_asyncio_run() -> None:
    """`asyncio.to_thread`'s call is waited for by `asyncio.run` at its end (the default
    executor's shutdown) even once its task was cancelled: a Ctrl-C on a command waiting
    on Kafka ended only with the call. `to_daemon_thread`'s is left to its thread."""
    hung = threading.Event()

    async def main() -> int:
        assert await to_daemon_thread(lambda x, *, y: x + y, 1, y=2, thread_name="t") == 3
        loop, started = asyncio.get_running_loop(), asyncio.Event()

        def hang() -> None:
            loop.call_soon_threadsafe(started.set)
            hung.wait(30)

        call = asyncio.ensure_future(to_daemon_thread(hang, thread_name="t"))
        async with asyncio.timeout(5):  # the call is under way on its thread
            await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return 0

    began = time.monotonic()
    try:
        asyncio.run(main())
        assert time.monotonic() - began < 10  # not the 30 s the call waits
    finally:
        hung.set()
