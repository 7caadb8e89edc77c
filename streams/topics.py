"""Topic names of the contract, in one place.

Deployments may prefix every name (`CHAINWATCH_KAFKA__TOPIC_PREFIX`); replays
use a fresh prefix per run so they never read another run's records.
"""

from __future__ import annotations

from dataclasses import dataclass

ORDERS = "orders"
CUSTOMERS = "crm.customers"
SCANS = "scans"
UNIT_STATUS = "unit-status"
ALERTS = "alerts"
ORDER_STATE = "order-state"
DEAD_LETTER = "dead-letter"

INPUT_TOPICS = (ORDERS, CUSTOMERS, SCANS, UNIT_STATUS)
OUTPUT_TOPICS = (ALERTS, ORDER_STATE, DEAD_LETTER)
COMPACTED_TOPICS = frozenset({CUSTOMERS})


@dataclass(frozen=True)
class TopicNames:
    """The contract's topic names under one deployment prefix."""

    prefix: str = ""

    def __call__(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def strip(self, full_name: str) -> str:
        """The contract name of a prefixed topic."""
        return full_name[len(self.prefix) :] if full_name.startswith(self.prefix) else full_name

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(self(n) for n in (*INPUT_TOPICS, *OUTPUT_TOPICS))
