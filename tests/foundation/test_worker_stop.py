"""A worker's stop has a deadline (chainwatch.worker_stop).

A real faust worker on the suite's broker, in its own process: one case has a
service whose stop never ends (as the consumer thread's with the broker gone),
the other stops cleanly. SIGTERM to each; the first must exit 1 after its
deadline and say why, the second 0 before it. A third crashes (as after a
drained commit that timed out) with that stop hanging, and no signal: the crash
starts the deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.sinks.sink_harness import wait_for

WORKER = """
import asyncio, sys
from pathlib import Path
from typing import Any
from mode import Service
from chainwatch.logs import configure_logging
from chainwatch.worker_stop import BoundedStopWorker
from streams.app import create_app

bootstrap, data_dir, ready, hang, app_id = (
    sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
)
configure_logging("info", "json")
app = create_app(app_id, bootstrap=bootstrap, partitions=1, data_dir=data_dir)

@app.service
class Stuck(Service):
    async def on_stop(self) -> None:
        if hang in ("hang", "crash"):
            await asyncio.Event().wait()  # never set

@app.task
async def started() -> None:
    ready.write_text("started")
    if hang == "crash":  # as a drained commit that timed out (CommitTimedOut), no signal
        await app.consumer.crash(RuntimeError("commit timed out"))

BoundedStopWorker(
    app, loglevel="info", quiet=True, override_logging=False, stop_timeout_s=2.0
).execute_from_commandline()
"""


@pytest.mark.parametrize("hang", ["hang", "clean", "crash"])
def test_a_stop_that_does_not_end_exits_after_its_deadline(
    tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str], hang: str
) -> None:
    ready = tmp_path / "ready"
    log = tmp_path / "worker.log"
    with (
        log.open("wb") as out,
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                kafka_bootstrap,
                str(tmp_path),
                str(ready),
                hang,
                unique("stop"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as worker,
    ):
        try:
            wait_for(ready.exists, timeout_s=90, what="the worker to start")
            if hang != "crash":
                worker.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            status = worker.wait(timeout=60)
            took = time.monotonic() - signalled
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    timed_out = [line for line in lines if line.get("event") == "process_stop_timed_out"]
    if hang in ("hang", "crash"):
        assert status == 1, log.read_text()[-3000:]
        cause = "SIGTERM" if hang == "hang" else "crash"
        assert took >= 2.0 or cause == "crash"  # from the signal; the crash came after ready
        assert [(t["process"], t["cause"]) for t in timed_out] == [("worker", cause)]
        stopped = [line for line in lines if line.get("event") == "process_stopped"]
        assert [line["outcome"] for line in stopped] == ["exit 1"]  # its last line, as ever
    else:
        assert status == 0, log.read_text()[-3000:]
        assert timed_out == []
        # no terminal control codes in a log file (faust's spinner wrote ESC[?25h)
        assert "\x1b" not in log.read_text()


def test_the_last_turn_of_a_stop_waits_for_the_cancelled_tasks_not_a_fixed_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mode's sentinel slept 1 s on every stop; ours ends once the tasks it was left are
    done (the sleeps it asks for are counted, not the time it took: load-independent)."""
    from chainwatch import worker_stop

    asked: list[float] = []
    sleep = asyncio.sleep

    async def counted(delay: float, *args: Any) -> Any:
        asked.append(delay)
        return await sleep(0, *args)

    async def stop() -> bool:
        cancelled = asyncio.ensure_future(asyncio.Event().wait())  # as mode's gather left it
        await sleep(0)
        cancelled.cancel()
        monkeypatch.setattr(asyncio, "sleep", counted)
        await worker_stop.BoundedStopWorker._sentinel_task(None)  # type: ignore[arg-type]
        return cancelled.cancelled()

    assert asyncio.run(stop())  # it waited for the cancelled task to end
    assert asked == [0]  # one turn for the callbacks, no fixed wait (mode's: [1.0])
