"""The contract's topic names (CONTRACT.md), by logical name: the one definition.

`streams.topics.TopicNames` puts a deployment's prefix in front of them
(`CHAINWATCH_KAFKA__TOPIC_PREFIX`); everything else imports the names from here.
"""

from __future__ import annotations

from typing import Final, Literal

ORDERS: Final = "orders"
CUSTOMERS: Final = "crm.customers"
SCANS: Final = "scans"
UNIT_STATUS: Final = "unit-status"
ALERTS: Final = "alerts"
ORDER_STATE: Final = "order-state"
DEAD_LETTER: Final = "dead-letter"

INPUT_TOPICS: Final[tuple[str, ...]] = (ORDERS, CUSTOMERS, SCANS, UNIT_STATUS)
OUTPUT_TOPICS: Final[tuple[str, ...]] = (ALERTS, ORDER_STATE, DEAD_LETTER)
COMPACTED_TOPICS: Final = frozenset({CUSTOMERS})
"""Topics keyed by entity whose null value deletes it (a tombstone)."""
APPEND_TIME_TOPICS: Final = frozenset({SCANS, ORDERS})
"""Topics created with `message.timestamp.type=LogAppendTime`: a record's Kafka timestamp
is when the broker took it, not what its producer's clock said. A live worker that
starts behind a backlog holds its clock at these timestamps until it has read the
backlog (docs/rules.md, "The clock"), so one clock, the broker's, must set them."""

InputTopic = Literal["orders", "crm.customers", "scans", "unit-status"]
"""`INPUT_TOPICS` as a type (a replay line's `topic`). A Literal cannot name the
constants above, so tests/schemas/test_topics.py checks the two list the same names."""
