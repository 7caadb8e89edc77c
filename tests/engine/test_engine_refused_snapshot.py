"""A step's snapshot or join answer refused while its table's changelog record is delivered.

Found on the real broker (the order-state topic's `max.message.bytes` lowered): the step
wrote the order's changelog record (delivered) and its snapshot (refused); the worker
stopped with exit 1 and nothing committed, as designed. The restarted worker recovered
the table with the step's state, so the input read again changed nothing, and its
recovery announced the alerts again but no snapshot: the order's state stayed stale
for sinks until the order's next change (a quiet order's for good). The customer side
had the same gap: a CRM record whose customer value was stored but whose answers to the
subscribed orders were refused was read again as already known, and answered nobody.

Now recovery publishes the snapshot of every order whose last snapshot came from a step
whose input was not committed, and a CRM record read again answers its subscribers
again. Helpers: tests/engine/test_engine_tick_delivery.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from test_engine_spent_producer import committed_offset, hooked_worker
from test_engine_tick_delivery import (
    TICK_REFUSED,
    inbox,
    live_worker_world,
    max_message_bytes,
)
from worker_ops import created_order, records_within, until

from chainwatch.runners import topic_names
from chainwatch.settings import Settings
from streams.topics import CUSTOMERS, ORDER_STATE, ORDERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KAFKA_DEFAULT = "1048588"


def snapshot_reader(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        topic_names(settings)(ORDER_STATE), bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest", isolation_level="read_committed",
    )  # fmt: skip


def snapshot_of(
    reader: KafkaConsumer, order_id: str, within_s: float, check: Callable[[Any], bool]
) -> dict[str, Any] | None:
    """The first snapshot of `order_id` read within `within_s` that `check` accepts."""
    for record in records_within(reader, within_s):
        state = json.loads(record.value)
        if state["order_id"] == order_id and check(state):
            return dict(state)
    return None


def test_a_refused_snapshot_is_published_by_the_restarted_worker(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    with live_worker_world(settings_factory, kafka_bootstrap) as (settings, _, producer):
        names = topic_names(settings)
        orders = TopicPartition(names(ORDERS), 0)
        reader = snapshot_reader(settings)
        try:
            with hooked_worker(settings, tmp_path) as worker:
                max_message_bytes(settings, names(ORDER_STATE), TICK_REFUSED)
                value = created_order("PO-QUIET", datetime.now(UTC))
                producer.send(names(ORDERS), key=b"PO-QUIET", value=value).get(30)
                said = worker.stopped_with_why(40)
            assert "MessageSizeTooLargeError" in said, said[-2000:]
            assert committed_offset(settings, orders) is None
            assert snapshot_of(reader, "PO-QUIET", 1, lambda _: True) is None
            max_message_bytes(settings, names(ORDER_STATE), KAFKA_DEFAULT)
            with hooked_worker(settings, tmp_path / "again") as again:
                state = snapshot_of(reader, "PO-QUIET", 60, lambda _: True)
                assert state is not None, "the restarted worker published no snapshot"
                assert announced(again.log)() == 1
                assert state["customer"]["customer_id"] == "C-1"
                until("the order committed", lambda: committed_offset(settings, orders) == 1, 30)
            # its input committed, the snapshot is known delivered: not published again
            with hooked_worker(settings, tmp_path / "third") as third:
                recovered = announced(third.log)
                until("the third worker recovered", lambda: recovered() is not None, 60)
                assert recovered() == 0, third.log.read_text()[-2000:]
        finally:
            reader.close()


def announced(log: Path) -> Callable[[], int | None]:
    """The snapshots a worker's recovery announced, as its log says (None: not yet)."""

    def read() -> int | None:
        for line in log.read_text().splitlines():
            if "orders_recovered" in line:
                found = re.search(r"snapshots_announced\W+(\d+)", line)
                assert found is not None, line
                return int(found.group(1))
        return None

    return read


def test_a_refused_customer_answer_is_sent_again_by_the_restarted_worker(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The CRM record's answer to its subscribed order (the order inbox) is refused; the
    customer's changelog record is delivered. The restart must still bring the fact to
    the order (its snapshot shows the tier)."""
    with live_worker_world(settings_factory, kafka_bootstrap) as (settings, _, producer):
        names = topic_names(settings)
        orders, crm = TopicPartition(names(ORDERS), 0), TopicPartition(names(CUSTOMERS), 0)
        reader = snapshot_reader(settings)
        try:
            with hooked_worker(settings, tmp_path) as worker:
                value = created_order("PO-1", datetime.now(UTC))
                producer.send(names(ORDERS), key=b"PO-1", value=value).get(30)
                first = snapshot_of(reader, "PO-1", 30, lambda _: True)
                assert first is not None, "no first snapshot"
                until("the order committed", lambda: committed_offset(settings, orders) == 1, 30)
                max_message_bytes(settings, inbox(settings), TICK_REFUSED)
                customer = {"customer_id": "C-1", "name": "Nordic Knits AB", "tier": "platinum"}
                producer.send(names(CUSTOMERS), key=b"C-1", value=json.dumps(customer).encode())
                producer.flush()
                said = worker.stopped_with_why(40)
            assert "MessageSizeTooLargeError" in said, said[-2000:]
            assert committed_offset(settings, crm) is None
            max_message_bytes(settings, inbox(settings), KAFKA_DEFAULT)
            with hooked_worker(settings, tmp_path / "again"):
                state = snapshot_of(
                    reader, "PO-1", 60, lambda s: s["customer"]["tier"] == "platinum"
                )
                assert state is not None, "the order never learnt its customer's tier"
        finally:
            reader.close()
