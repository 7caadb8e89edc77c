"""Helpers for sink integration tests: publish, run `chainwatch sink` as a process, wait."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bulk_publish import publish_records

from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings, child_environment
from sinks.clickhouse.readers import loopback_reader
from sinks.webhooks.records import NOTIFY_TOPICS


def prepare_all_topics(settings: Settings) -> None:
    """Every topic the sink subscribes to (what `run_sink` creates before consuming)."""
    prepare_topics(settings, also=NOTIFY_TOPICS)


def publish(
    settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    """Publish `records` to `topic`, in order, all acknowledged on return (bulk_publish.py:
    aiokafka's producer, ~4 x kafka-python's pace)."""
    name = settings.kafka.topic(topic)
    return publish_records(settings.kafka.bootstrap, ((name, k, v) for k, v in records))


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class SinkProcess:
    """`python -m chainwatch sink` with the test's settings; stderr kept in a file."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *args: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        env = {**child_environment(settings, os.environ), **(extra_env or {})}
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chainwatch", "sink", *args],
            env=env,
            stdout=self._log,
            stderr=self._log,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()


def loopback_count(settings: Settings, sql: str) -> int | None:
    """A count through the running sink's query endpoint; None until it serves."""
    reader = loopback_reader(settings)
    if reader is None:
        return None
    try:
        return int(reader.query(sql).rows[0][0])
    except Exception:
        return None
    finally:
        reader.close()
