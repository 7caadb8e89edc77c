"""The one way long-running processes run (chainwatch/process.py): until SIGINT/SIGTERM,
with their ops port serving meanwhile and released after. No broker: plain unit tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import urllib.request

import pytest

from chainwatch.ops_server import OpsServer, serve_ops
from chainwatch.process import run_until_signalled

DEADLINE_S = 10.0


def _refused(server: OpsServer) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_stop_and_the_process_returns_what_main_returns(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)

    async def main(stop: asyncio.Event) -> str:
        assert not stop.is_set()
        os.kill(os.getpid(), sig)
        await asyncio.wait_for(stop.wait(), DEADLINE_S)  # a TimeoutError fails the test
        return "stopped"

    assert run_until_signalled("test", main) == "stopped"
    assert signal.getsignal(sig) == before  # the process's own handlers are back


def test_the_ops_port_answers_while_main_runs_and_is_released_after() -> None:
    ops = serve_ops("127.0.0.1", 0)  # any free port

    async def main(stop: asyncio.Event) -> tuple[int, bytes]:
        def scrape() -> tuple[int, bytes]:
            with urllib.request.urlopen(ops.metrics_url, timeout=DEADLINE_S) as answer:
                return answer.status, answer.read()

        return await asyncio.to_thread(scrape)

    status, body = run_until_signalled("test", main, ops=ops)
    assert status == 200
    assert b"python_info" in body  # the default registry's collectors
    assert _refused(ops)


def test_a_failing_main_still_releases_the_port_and_the_signal_handlers() -> None:
    ops = serve_ops("127.0.0.1", 0)
    before = signal.getsignal(signal.SIGTERM)

    async def main(stop: asyncio.Event) -> None:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        run_until_signalled("test", main, ops=ops)
    assert _refused(ops)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_connection_that_sends_nothing_is_closed_and_scrapes_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chainwatch import ops_server

    assert 0 < ops_server._Handler.timeout <= 30  # a deadline, not the library's None
    monkeypatch.setattr(ops_server._Handler, "timeout", 0.5)  # the same, quicker
    ops = serve_ops("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", ops.port), timeout=DEADLINE_S) as silent:
            silent.sendall(b"GET /metr")
            assert silent.recv(1) == b""  # closed unanswered; a TimeoutError fails the test
        with urllib.request.urlopen(ops.metrics_url, timeout=DEADLINE_S) as answer:
            assert answer.status == 200
    finally:
        ops.stop()
