"""Driving a running worker: its ops endpoints, an order to send it, its outputs to read
(tests/engine/test_engine_live_clock.py, test_engine_plan_change.py)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from schemas.common import format_utc

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, bytes]:
    """(status, body); (0, b"") while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def until(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)  # polling interval of a condition with a deadline
    raise AssertionError(f"{what}: not within {timeout_s} s")


def samples(base: str) -> Samples:
    body = get(f"{base}/metrics")[1].decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def named(found: Samples, name: str) -> list[float]:
    return [v for (n, _), v in found.items() if n == name]


def created_order(order_id: str, placed_at: datetime) -> bytes:
    """An order's `created` record, due 20 days after it was placed."""
    return json.dumps(
        {
            "op": "created", "order_id": order_id, "customer_id": "C-1", "product": "crewneck",
            "quantity": 10, "placed_at": format_utc(placed_at),
            "due_at": format_utc(placed_at + timedelta(days=20)),
        }
    ).encode()  # fmt: skip


def records_within(consumer: KafkaConsumer, timeout_s: float) -> Iterator[Any]:
    """What `consumer` reads until `timeout_s` has passed (the caller stops when it has
    what it waits for)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            yield from batch
