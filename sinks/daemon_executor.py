"""An executor of daemon threads: for blocking calls that cannot be cancelled and that
the process must never wait for at exit.

`concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit, even
after `shutdown(wait=False)` (Python 3.9+: `threading._register_atexit`). A call that
blocks in C for long, as `getaddrinfo` does while a DNS server does not answer, then
keeps a stopped process alive past its stop deadline (for as long as the call lasts,
or for ever), after it has logged that it stopped. The threads here are daemons: at
exit they are abandoned, never waited for. Use it only for calls whose result is
worthless once the process stops (a look-up), never for one that must finish (a write).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar, cast

T = TypeVar("T")

_Work = tuple[Future[Any], Callable[[], Any]] | None
"""A call and its future; None tells one thread to end."""


class DaemonExecutor(Executor):
    """`max_workers` daemon threads, one started with each call until there are as many
    (no reuse of idle ones first: a thread that looks idle may be about to hang on the
    next call, and each call should find a free thread while fewer than `max_workers`
    hang), ended by `shutdown`.

    A call still running at `shutdown` runs on in its thread until it returns (nothing
    can stop it); its result is dropped if its future was cancelled meanwhile.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        self._name = name
        self._work: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[T] = Future()
            self._work.put((cast(Future[Any], future), functools.partial(fn, *args, **kwargs)))
            if len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            return future

    def _run(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            future, call = work
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:  # handed to the caller, as the stdlib does
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                del future, call, work

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more work; queued calls are cancelled if `cancel_futures`. `wait=False`
        returns at once, and a call under way never holds up the process's exit."""
        with self._lock:
            self._shut = True
            if cancel_futures:
                while True:
                    try:
                        work = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if work is not None:
                        work[0].cancel()
            for _ in self._threads:
                self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def on_daemon_thread(
    fn: Callable[..., T], /, *args: Any, thread_name: str, **kwargs: Any
) -> Future[T]:
    """`fn(*args, **kwargs)` on a daemon thread of its own, its future at once: for a
    blocking call (a Kafka probe, a store's query) that Ctrl-C or the process's exit must
    never wait for. The thread ends with the call; a result nobody waits for is dropped."""
    pool = DaemonExecutor(1, thread_name)
    try:
        return pool.submit(fn, *args, **kwargs)
    finally:
        pool.shutdown(wait=False)


async def to_daemon_thread(
    fn: Callable[..., T], /, *args: Any, thread_name: str, **kwargs: Any
) -> T:
    """`asyncio.to_thread(fn, *args)` on a daemon thread of its own: for a blocking call
    (a Kafka admin request) that a Ctrl-C must not wait for.

    `asyncio.to_thread` runs on the loop's default executor, which `asyncio.run` shuts
    down at its end and waits for: a Ctrl-C cancelled the task at once, yet the command
    ended only when the call did (`chainwatch silences list` against a Kafka that does
    not answer: ~15 s, its admin call's deadline, and a second Ctrl-C did not help).
    Here a cancelled await leaves the call to finish on its thread, its result dropped."""
    context = contextvars.copy_context()  # as `to_thread`: the caller's log context
    call = on_daemon_thread(context.run, fn, *args, thread_name=thread_name, **kwargs)
    return await asyncio.wrap_future(call)
