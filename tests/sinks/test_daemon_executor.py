"""`DaemonExecutor`: what the resolver relies on (results, errors, a bound on threads, a
shutdown that cancels queued calls and waits for none) without the process exit itself
(tests/sinks/test_webhook_attempts.py: a look-up hanging at stop)."""

from __future__ import annotations

import threading

import pytest

from sinks.daemon_executor import DaemonExecutor


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
